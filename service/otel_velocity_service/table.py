"""The velocity table: registry rows filtered, sorted, paged and given their Sentry links.

Pure functions of the rows and the query, so the endpoint and its tests share them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from otel_velocity import RouteStats, VelocityRegistry
from otel_velocity.exemplars import Exemplar
from otel_velocity_service.links import (
    SentryLinkSettings,
    SentryNotConfigured,
    errors_url,
    trace_url,
    traces_url,
)

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class SortColumn(str, Enum):
    """Columns the table can be sorted by: every numeric column, and the text keys."""

    RPS = "rps"
    RPS_5M = "rps_5m"
    P50_MS = "p50_ms"
    P95_MS = "p95_ms"
    P99_MS = "p99_ms"
    P95_5M_MS = "p95_5m_ms"
    ERR_RATE = "err_rate"
    ERR_RATE_5M = "err_rate_5m"
    COUNT = "count"
    ERRORS = "errors"
    COUNT_5M = "count_5m"
    BASELINE_P95_MS = "baseline_p95_ms"
    REGRESS_PCT = "regress_pct"
    ROUTE = "route"
    KEY = "key"
    SERVICE = "service"

    @property
    def is_text(self) -> bool:
        return self in (SortColumn.ROUTE, SortColumn.KEY, SortColumn.SERVICE)


class SortOrder(str, Enum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class TableQuery:
    """The query parameters of ``GET /ops/velocity``.

    ``order`` None sorts text columns ascending and numeric columns descending.
    """

    service: str | None = None
    sort: SortColumn = SortColumn.P95_MS
    order: SortOrder | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def build_table(
    registry: VelocityRegistry,
    query: TableQuery,
    *,
    now_s: float,
    sentry_links: SentryLinkSettings | None,
    sentry_off_reason: str | None,
    is_own: Callable[[str, str], bool],
) -> dict[str, Any]:
    """Compute the whole ``GET /ops/velocity`` response for ``query``."""
    rows = [
        stats
        for stats in registry.rows(include_trend=False)
        if not is_own(stats.service, stats.key.route)
    ]
    services = sorted({stats.service for stats in rows})
    if query.service is not None:
        rows = [stats for stats in rows if stats.service == query.service]

    rows = sort_rows(rows, query.sort, query.order)
    page = [
        replace(stats, window=replace(stats.window, trend=registry.trend(stats.service, stats.key)))
        for stats in rows[query.offset : query.offset + query.limit]
    ]
    overflow = registry.overflow()
    return {
        "generated_at_s": now_s,
        "window_s": registry.settings.short_window_s,
        "sentry": {"enabled": sentry_links is not None, "reason": sentry_off_reason},
        "services": services,
        "total": len(rows),
        "offset": query.offset,
        "limit": query.limit,
        "overflow": {
            "routes": overflow.routes,
            "spans": overflow.spans,
            "services": overflow.services,
        },
        "rows": [row_json(stats, sentry_links) for stats in page],
    }


def sort_rows(
    rows: Iterable[RouteStats], column: SortColumn, order: SortOrder | None
) -> list[RouteStats]:
    """Sort rows by ``column``, with rows without a value last in both orders.

    Ties keep a stable order: by route key, then by service, as the page sorts them.
    """
    if order is None:
        order = SortOrder.ASC if column.is_text else SortOrder.DESC
    descending = order is SortOrder.DESC

    ordered = sorted(rows, key=lambda stats: (str(stats.key), stats.service))
    if column.is_text:
        return sorted(ordered, key=lambda stats: _text_value(stats, column), reverse=descending)

    with_value = [stats for stats in ordered if _numeric_value(stats, column) is not None]
    without_value = [stats for stats in ordered if _numeric_value(stats, column) is None]
    with_value.sort(key=lambda stats: _numeric_value(stats, column) or 0.0, reverse=descending)
    return with_value + without_value


def row_json(stats: RouteStats, sentry_links: SentryLinkSettings | None) -> dict[str, Any]:
    """Render one row in the JSON contract of ``GET /ops/velocity``."""
    window = stats.window
    key = stats.key
    return {
        "service": stats.service,
        "method": key.method,
        "route": key.route,
        "key": str(key),
        "rps": window.rps,
        "rps_5m": window.rps_5m,
        "p50_ms": window.p50_ms,
        "p95_ms": window.p95_ms,
        "p99_ms": window.p99_ms,
        "p95_5m_ms": window.p95_5m_ms,
        "err_rate": window.err_rate,
        "err_rate_5m": window.err_rate_5m,
        "count": window.count,
        "errors": window.errors,
        "count_5m": window.count_5m,
        "baseline_p95_ms": window.baseline_p95_ms,
        "regress_pct": window.regress_pct,
        "is_regress": window.is_regress,
        "trend": [
            {
                "time_s": point.time_s,
                "rps": point.rps,
                "p95_ms": point.p95_ms,
                "err_rate": point.err_rate,
            }
            for point in window.trend
        ],
        "exemplars": [_exemplar_json(exemplar, sentry_links) for exemplar in window.exemplars],
        "links": route_links(stats, sentry_links),
    }


def route_links(
    stats: RouteStats, sentry_links: SentryLinkSettings | None
) -> dict[str, str] | None:
    """Return the row's Sentry links, or None when links are off or the row cannot have any.

    The overflow row has none, and neither has a service without a Sentry project id.
    """
    if sentry_links is None:
        return None
    method, route = stats.key.method, stats.key.route
    try:
        return {
            "errors": errors_url(sentry_links, method=method, route=route, service=stats.service),
            "traces": traces_url(sentry_links, method=method, route=route, service=stats.service),
        }
    except (SentryNotConfigured, ValueError) as error:
        logger.debug(
            "otel-velocity service: no Sentry links for %s %s: %s", stats.service, stats.key, error
        )
        return None


def _exemplar_json(exemplar: Exemplar, sentry_links: SentryLinkSettings | None) -> dict[str, Any]:
    trace_id_hex = exemplar.trace_id_hex
    url = None
    if sentry_links is not None and exemplar.trace_id != 0:
        url = trace_url(sentry_links, trace_id_hex, timestamp_s=exemplar.time_s)
    return {
        "trace_id": trace_id_hex,
        "span_id": exemplar.span_id_hex,
        "duration_ms": exemplar.duration_ms,
        "status_code": exemplar.status_code,
        "kind": exemplar.kind.value,
        "time_s": exemplar.time_s,
        "trace_url": url,
    }


def _numeric_value(stats: RouteStats, column: SortColumn) -> float | None:
    value = getattr(stats.window, column.value)
    return None if value is None else float(value)


def _text_value(stats: RouteStats, column: SortColumn) -> str:
    if column is SortColumn.ROUTE:
        return stats.key.route
    if column is SortColumn.KEY:
        return str(stats.key)
    return stats.service
