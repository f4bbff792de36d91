"""Cardinality attack: distinct templates and raw paths cannot grow the windows past the caps.

The main test runs the full-size attack of ``benchmarks/cardinality.py`` through
``VelocitySpanProcessor.on_end``: 100,000 distinct ``http.route`` values, then 1,000,000 distinct
unrouted paths (about 10 s on a 2-core machine). Spans are ``ReadableSpan`` objects built
directly, because starting them through a tracer would cost ten times the processor's work.
"""

from __future__ import annotations

import gc

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from benchmarks.cardinality import ERROR_EVERY, AttackResult, rss_bytes, run_attack
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import (
    DEFAULT_MAX_ROUTES,
    DEFAULT_MAX_SERVICES,
    MAX_TRACKED_OVERFLOW_KEYS,
    OVERFLOW_SERVICE,
    VelocityRegistry,
)
from otel_velocity.routes import OVERFLOW_KEY, UNMATCHED_ROUTE, RouteKey

TEMPLATES = 100_000
RAW_PATHS = 1_000_000
UNMATCHED_GET = RouteKey("GET", UNMATCHED_ROUTE)
# Growth allowed while the raw paths are fed: below 17 bytes per span, so that keeping any
# Python object per span (an int alone takes 28 bytes) fails.
MAX_RSS_GROWTH_BYTES = 16 * 2**20
LONG_TEMPLATES = 20_000
LONG_TEMPLATE_CHARS = 16_000


def errors_among(first: int, stop: int) -> int:
    """Count the requests numbered ``first`` to ``stop - 1`` that responded with 500."""
    return sum(1 for n in range(first, stop) if n % ERROR_EVERY == 0)


@pytest.fixture(scope="module")
def attack() -> AttackResult:
    return run_attack(TEMPLATES, RAW_PATHS, snapshots_per_phase=2)


def test_rows_stay_at_cap(attack: AttackResult) -> None:
    template_rows = [key for key in attack.counts if key.route.startswith("/tenant/")]
    assert len(template_rows) == DEFAULT_MAX_ROUTES
    assert OVERFLOW_KEY in attack.counts
    assert UNMATCHED_GET in attack.counts
    assert len(attack.counts) == DEFAULT_MAX_ROUTES + 2


def test_rows_never_hold_raw_paths(attack: AttackResult) -> None:
    assert not [key for key in attack.counts if "/probe/" in key.route]


def test_template_rows_count_exactly(attack: AttackResult) -> None:
    for n in range(DEFAULT_MAX_ROUTES):
        key = RouteKey("GET", f"/tenant/{n}/items/{{item_id}}")
        assert attack.counts[key] == (1, int(n % ERROR_EVERY == 0)), key


def test_overflow_counts_exact(attack: AttackResult) -> None:
    overflowed = TEMPLATES - DEFAULT_MAX_ROUTES
    assert attack.counts[OVERFLOW_KEY] == (
        overflowed,
        errors_among(DEFAULT_MAX_ROUTES, TEMPLATES),
    )
    assert attack.overflow_spans == overflowed
    assert attack.overflow_routes == MAX_TRACKED_OVERFLOW_KEYS


def test_unmatched_row_counts_exactly(attack: AttackResult) -> None:
    assert attack.counts[UNMATCHED_GET] == (RAW_PATHS, errors_among(0, RAW_PATHS))


def test_memory_flat_during_raw_paths(attack: AttackResult) -> None:
    after_templates = next(s for s in attack.snapshots if s.spans == TEMPLATES)
    end = attack.snapshots[-1]
    # One new row, the (unmatched) one, is all the raw paths may add.
    assert end.rows == after_templates.rows + 1
    assert end.retained_bytes - after_templates.retained_bytes < 64 * 1024
    assert end.rss_bytes - after_templates.rss_bytes < MAX_RSS_GROWTH_BYTES


def test_memory_bounded_by_rows(attack: AttackResult) -> None:
    end = attack.snapshots[-1]
    start = attack.snapshots[0]
    # The documented maximum of a route window is about 280 KB; these rows hold one bucket each.
    assert end.retained_bytes < end.rows * 280 * 1024
    assert end.rss_bytes - start.rss_bytes < 64 * 2**20


def test_long_templates_memory_bounded() -> None:
    """A router that reports raw paths as ``http.route`` sends long, distinct values."""
    registry = VelocityRegistry(clock=lambda: 1000.0)
    processor = VelocitySpanProcessor(registry)
    resource = Resource({"service.name": "shop"})
    gc.collect()
    before_bytes = rss_bytes()

    for n in range(LONG_TEMPLATES):
        route = f"/{n}/" + "x" * LONG_TEMPLATE_CHARS
        processor.on_end(
            ReadableSpan(
                name="GET",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "GET", "http.route": route},
                resource=resource,
            )
        )
    gc.collect()
    growth_bytes = rss_bytes() - before_bytes

    assert len(registry.rows()) == DEFAULT_MAX_ROUTES + 1
    # 20,000 routes of 16 KB pass through, 320 MB in all; keeping 4,096 of them would be 64 MB.
    assert growth_bytes < 24 * 2**20


def test_unmatched_keeps_row_after_cap() -> None:
    registry = VelocityRegistry(max_routes=10, clock=lambda: 1000.0)
    for n in range(20):
        registry.record("shop", RouteKey("GET", f"/r{n}"), 5.0, False, 200)
    for method in ("GET", "POST", "_OTHER"):
        registry.record("shop", RouteKey(method, UNMATCHED_ROUTE), 5.0, False, 404)

    rows = {row.key: row.window.count for row in registry.rows()}

    assert rows[UNMATCHED_GET] == 1
    assert rows[RouteKey("_OTHER", UNMATCHED_ROUTE)] == 1
    assert rows[OVERFLOW_KEY] == 10
    assert len(rows) == 10 + 3 + 1


def test_unmatched_first_leaves_full_cap() -> None:
    registry = VelocityRegistry(max_routes=10, clock=lambda: 1000.0)
    registry.record("shop", UNMATCHED_GET, 5.0, False, 404)
    for n in range(20):
        registry.record("shop", RouteKey("GET", f"/r{n}"), 5.0, False, 200)

    rows = {row.key: row.window.count for row in registry.rows()}

    assert len([key for key in rows if key.route.startswith("/r")]) == 10
    assert rows[OVERFLOW_KEY] == 10


def test_unknown_method_unmatched_capped() -> None:
    """Only the ten ``(unmatched)`` keys that ``route_key`` can build skip the cap."""
    registry = VelocityRegistry(max_routes=2, clock=lambda: 1000.0)
    for n in range(5):
        registry.record("shop", RouteKey(f"BREW{n}", UNMATCHED_ROUTE), 5.0, False, 404)

    rows = {row.key: row.window.count for row in registry.rows()}

    assert len(rows) == 3
    assert rows[OVERFLOW_KEY] == 3


def test_distinct_services_overflow() -> None:
    registry = VelocityRegistry(clock=lambda: 1000.0)
    processor = VelocitySpanProcessor(registry)
    services = 10_000
    for n in range(services):
        processor.on_end(
            ReadableSpan(
                name="GET",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "GET", "http.route": "/a"},
                resource=Resource({"service.name": f"svc-{n}"}),
            )
        )

    rows = registry.rows()

    assert len(registry.services()) == DEFAULT_MAX_SERVICES + 1
    assert registry.overflow().services == services - DEFAULT_MAX_SERVICES
    assert len(rows) == DEFAULT_MAX_SERVICES + 1
    assert [r.window.count for r in rows if r.service == OVERFLOW_SERVICE] == [
        services - DEFAULT_MAX_SERVICES
    ]
