"""Build "View in Sentry" deep links for velocity table rows.

The links filter on exactly the values the otel-velocity library sends to
Sentry: error events carry the tags ``route`` (the route template) and
``method``, and transactions are named ``METHOD /route-template``.

URL shapes:

- SaaS: ``https://{org}.sentry.io/{page}``
- self-hosted: ``{SENTRY_URL}/organizations/{org}/{page}``

where ``{page}`` is ``issues/``, ``explore/traces/`` or
``explore/traces/trace/{trace_id}/``. Sources: the URL tests of
getsentry/sentry-mcp (packages/mcp-server/src/api-client/client.test.ts)
for both host forms and the trace pages, and the "Open in Issues" link test
of Sentry's dashboards (IssueWidgetCard in getsentry/sentry) for the issues
stream parameters ``project``, ``environment``, ``query`` and
``statsPeriod``.

This module is pure: it reads no environment itself and imports no web
framework, so the service and its tests can call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_STATS_PERIOD",
    "OVERFLOW_METHOD",
    "OVERFLOW_ROUTE",
    "SentryLinkSettings",
    "SentryNotConfigured",
    "errors_search_query",
    "errors_url",
    "parse_route_key",
    "quote_search_value",
    "trace_url",
    "traces_search_query",
    "traces_url",
]

DEFAULT_STATS_PERIOD = "1h"

# The library folds routes past its route limit into one row with these
# values. No Sentry event carries them, so that row gets no links.
OVERFLOW_METHOD = "*"
OVERFLOW_ROUTE = "(overflow)"

# Sentry organization slugs are lowercase letters, digits, "-" and "_".
# The slug becomes part of the host name for SaaS links, so nothing else
# may pass.
_ORG_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# An HTTP method is an RFC 9110 token.
_METHOD_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_STATS_PERIOD_RE = re.compile(r"^[1-9][0-9]*[smhdw]$")
# Sentry search treats "*" as a wildcard unless an odd number of
# backslashes precedes it (WILDCARD_CHARS in src/sentry/api/event_search.py).
_ODD_BACKSLASHES_BEFORE_STAR_RE = re.compile(r"(?<!\\)\\(\\\\)*\*")


class SentryNotConfigured(Exception):
    """Raised when the Sentry link settings are missing or invalid.

    ``reason`` is a sentence for the page and the logs that names the
    environment variable to set.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SentryLinkSettings:
    """Organization, projects and web address that Sentry links point to.

    ``base_url`` is ``None`` for sentry.io, where each organization has its
    own host ``https://{org}.sentry.io``. ``project_id`` is the default
    numeric project id, and ``project_ids_by_service`` overrides it per
    OpenTelemetry ``service.name``.
    """

    org: str
    project_id: int | None = None
    environment: str | None = None
    base_url: str | None = None
    project_ids_by_service: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not _ORG_SLUG_RE.match(self.org):
            raise SentryNotConfigured(
                f"Invalid Sentry organization slug {self.org!r}: set SENTRY_ORG to "
                "the slug from your Sentry URL, e.g. 'acme' for https://acme.sentry.io."
            )
        if self.project_id is None and not self.project_ids_by_service:
            raise SentryNotConfigured(
                "Sentry project id is missing: set SENTRY_PROJECT_ID to the numeric "
                "project id, set SENTRY_DSN, or map services with "
                "VELOCITY_SENTRY_PROJECTS='shop=12,billing=13'."
            )
        # Freeze a caller's dict so the frozen dataclass stays immutable.
        object.__setattr__(
            self, "project_ids_by_service", MappingProxyType(dict(self.project_ids_by_service))
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SentryLinkSettings:
        """Read the settings from environment variables.

        Variables: ``SENTRY_ORG`` (alias ``SENTRY_ORG_SLUG``),
        ``SENTRY_PROJECT_ID`` (else the project id at the end of the
        ``SENTRY_DSN`` path), ``VELOCITY_SENTRY_PROJECTS``
        (``service=project_id`` pairs separated by commas),
        ``SENTRY_ENVIRONMENT`` (alias ``SENTRY_ENV``) and ``SENTRY_URL`` for
        a self-hosted Sentry. Empty values count as unset.

        Raises SentryNotConfigured when the organization or every project id
        is missing, or when a value is invalid.
        """
        org = _first_set(environ, "SENTRY_ORG", "SENTRY_ORG_SLUG")
        if org is None:
            raise SentryNotConfigured(
                "Sentry organization is missing: set SENTRY_ORG to your organization "
                "slug, e.g. 'acme' for https://acme.sentry.io."
            )

        project_id = _parse_project_id(environ)
        project_ids_by_service = _parse_service_projects(
            _first_set(environ, "VELOCITY_SENTRY_PROJECTS") or ""
        )
        base_url = _parse_base_url(_first_set(environ, "SENTRY_URL"))

        return cls(
            org=org,
            project_id=project_id,
            environment=_first_set(environ, "SENTRY_ENVIRONMENT", "SENTRY_ENV"),
            base_url=base_url,
            project_ids_by_service=project_ids_by_service,
        )

    def project_id_for(self, service: str | None) -> int:
        """Return the numeric project id for a ``service.name``.

        Raises SentryNotConfigured when the service has no mapping and no
        default project id is set.
        """
        if service is not None and service in self.project_ids_by_service:
            return self.project_ids_by_service[service]
        if self.project_id is not None:
            return self.project_id
        raise SentryNotConfigured(
            f"No Sentry project id for service {service!r}: add it to "
            "VELOCITY_SENTRY_PROJECTS (e.g. 'shop=12') or set SENTRY_PROJECT_ID "
            "as the default."
        )

    def page_url(self, page: str) -> str:
        """Return the absolute URL of an organization page such as ``issues/``."""
        if self.base_url is None:
            return f"https://{self.org}.sentry.io/{page}"
        return f"{self.base_url}/organizations/{self.org}/{page}"


def parse_route_key(key: str) -> tuple[str, str]:
    """Split a table key such as ``GET /items/{item_id}`` into method and route.

    The method ends at the first space, so a route may itself contain
    spaces. Raises ValueError naming the key when it has no method or no
    route.
    """
    method, separator, route = key.partition(" ")
    if not separator or not route or not _METHOD_RE.match(method):
        raise ValueError(
            f"Invalid route key {key!r}: expected 'METHOD /route-template', "
            "e.g. 'GET /items/{item_id}'."
        )
    return method, route


def quote_search_value(value: str) -> str:
    """Quote a value for an exact match in a Sentry search query.

    Sentry's search grammar (src/sentry/api/event_search.py and
    static/app/components/searchSyntax/grammar.pegjs in getsentry/sentry)
    reads a quoted value as ``"`` then ``\\"`` or any character but ``"``,
    then ``"``. It turns ``\\"`` into ``"``, reads an unescaped ``*`` as a
    wildcard and ``\\*`` as a literal ``*``. Every other backslash
    stays literal, so backslashes are not doubled here: ``\\\\`` would
    search for two backslashes.

    Two kinds of value have no exact quoted form. In a value that ends in a
    backslash, the closing quote would read as ``\\"``. In a value with an
    odd run of backslashes before a ``*``, the escape would read as a
    literal backslash and a wildcard. For those this returns a prefix match,
    the narrowest Sentry query that still matches the value.
    """
    if value.endswith("\\") or _ODD_BACKSLASHES_BEFORE_STAR_RE.search(value):
        # NOTE: prefix match, so it also finds longer values that start
        # with this one. In a wildcard pattern Sentry reads "\c" as a
        # literal c for every character c.
        pattern = value.replace("\\", "\\\\").replace("*", "\\*") + "*"
        return '"' + pattern.replace('"', '\\"') + '"'

    escaped = value.replace('"', '\\"').replace("*", "\\*")
    return f'"{escaped}"'


def errors_search_query(method: str, route: str) -> str:
    """Return the Sentry search for error events of one route.

    Example: ``route:"/items/{item_id}" method:"GET"``.
    """
    return f"route:{quote_search_value(route)} method:{quote_search_value(method)}"


def traces_search_query(method: str, route: str) -> str:
    """Return the trace explorer search for one route's transactions.

    Example: ``transaction:"GET /items/{item_id}"``.
    """
    return f"transaction:{quote_search_value(f'{method} {route}')}"


def errors_url(
    settings: SentryLinkSettings,
    *,
    method: str,
    route: str,
    service: str | None = None,
    stats_period: str = DEFAULT_STATS_PERIOD,
) -> str:
    """Return the issues stream URL filtered to one route's error events.

    Raises SentryNotConfigured when ``service`` has no project id, and
    ValueError for the overflow row or an invalid method or period.
    """
    _check_route(method, route)
    params = _page_filters(settings, service, stats_period)
    params.append(("query", errors_search_query(method, route)))
    return settings.page_url("issues/") + "?" + urlencode(params, quote_via=quote)


def traces_url(
    settings: SentryLinkSettings,
    *,
    method: str,
    route: str,
    service: str | None = None,
    stats_period: str = DEFAULT_STATS_PERIOD,
) -> str:
    """Return the trace explorer URL filtered to one route's transactions.

    Raises SentryNotConfigured when ``service`` has no project id, and
    ValueError for the overflow row or an invalid method or period.
    """
    _check_route(method, route)
    params = _page_filters(settings, service, stats_period)
    params.append(("query", traces_search_query(method, route)))
    return settings.page_url("explore/traces/") + "?" + urlencode(params, quote_via=quote)


def trace_url(
    settings: SentryLinkSettings,
    trace_id: str,
    *,
    timestamp_s: float | None = None,
) -> str:
    """Return the trace view URL for one trace id (32 hex digits).

    ``timestamp_s`` is a Unix time in seconds inside the trace. Sentry's
    trace links pass it as ``timestamp`` so the trace view searches near
    that time. Raises ValueError for an invalid or all-zero trace id.
    """
    normalized = trace_id.lower()
    if not _TRACE_ID_RE.match(normalized) or normalized == "0" * 32:
        raise ValueError(f"Invalid trace id {trace_id!r}: expected 32 hex digits, not all zero.")

    url = settings.page_url(f"explore/traces/trace/{normalized}/")
    if timestamp_s is not None:
        url += "?" + urlencode({"timestamp": int(timestamp_s)})
    return url


def _check_route(method: str, route: str) -> None:
    if method == OVERFLOW_METHOD and route == OVERFLOW_ROUTE:
        raise ValueError(
            "The overflow row merges many routes and no Sentry event carries its "
            "values: give it no links."
        )
    if not _METHOD_RE.match(method):
        raise ValueError(f"Invalid HTTP method {method!r}: expected a token such as 'GET'.")
    if not route:
        raise ValueError("Invalid route: expected a route template such as '/items/{item_id}'.")


def _page_filters(
    settings: SentryLinkSettings, service: str | None, stats_period: str
) -> list[tuple[str, str]]:
    """Return the project, environment and period parameters of a Sentry page."""
    if not _STATS_PERIOD_RE.match(stats_period):
        raise ValueError(
            f"Invalid stats period {stats_period!r}: expected a count and a unit, e.g. '1h'."
        )

    # The "project" page filter takes numeric ids: a slug there does not
    # filter, so only the numeric id may go there.
    params = [("project", str(settings.project_id_for(service)))]
    if settings.environment is not None:
        params.append(("environment", settings.environment))
    params.append(("statsPeriod", stats_period))
    return params


def _first_set(environ: Mapping[str, str], *names: str) -> str | None:
    """Return the first of ``names`` that is set to a non-blank value."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def _parse_positive_int(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number > 0 else None


def _parse_project_id(environ: Mapping[str, str]) -> int | None:
    """Return the default project id from SENTRY_PROJECT_ID or SENTRY_DSN."""
    raw_id = _first_set(environ, "SENTRY_PROJECT_ID")
    if raw_id is not None:
        project_id = _parse_positive_int(raw_id)
        if project_id is None:
            raise SentryNotConfigured(
                f"Invalid SENTRY_PROJECT_ID {raw_id!r}: set it to the numeric project "
                "id (Project Settings > General), not the project slug."
            )
        return project_id

    dsn = _first_set(environ, "SENTRY_DSN")
    if dsn is None:
        return None

    # A DSN is https://KEY@HOST[/PATH]/PROJECT_ID. The key is left out of
    # the message below.
    last_segment = urlsplit(dsn).path.rstrip("/").rpartition("/")[2]
    project_id = _parse_positive_int(last_segment)
    if project_id is None:
        raise SentryNotConfigured(
            "Invalid SENTRY_DSN: its path does not end in a numeric project id. "
            "Set SENTRY_PROJECT_ID to the numeric project id."
        )
    return project_id


def _parse_service_projects(text: str) -> dict[str, int]:
    """Parse ``shop=12,billing=13`` into a service to project id mapping."""
    mapping: dict[str, int] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue

        service, separator, raw_id = entry.rpartition("=")
        service = service.strip()
        project_id = _parse_positive_int(raw_id.strip())
        if not separator or not service or project_id is None:
            raise SentryNotConfigured(
                f"Invalid VELOCITY_SENTRY_PROJECTS entry {entry.strip()!r}: expected "
                "service=numeric_project_id pairs separated by commas, e.g. "
                "'shop=12,billing=13'."
            )
        if service in mapping and mapping[service] != project_id:
            raise SentryNotConfigured(
                f"VELOCITY_SENTRY_PROJECTS maps service {service!r} twice: keep one entry."
            )
        mapping[service] = project_id
    return mapping


def _parse_base_url(raw_url: str | None) -> str | None:
    """Return the self-hosted web base URL, or None for sentry.io."""
    if raw_url is None:
        return None

    parts = urlsplit(raw_url)
    if parts.username or parts.password:
        # The value is left out of this message because it contains a secret.
        raise SentryNotConfigured("Invalid SENTRY_URL: remove the credentials from it.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SentryNotConfigured(
            f"Invalid SENTRY_URL {raw_url!r}: expected the web address of your Sentry, "
            "e.g. https://sentry.example.com."
        )
    if parts.query or parts.fragment:
        raise SentryNotConfigured(f"Invalid SENTRY_URL {raw_url!r}: remove the query and fragment.")

    # sentry.io and its region hosts (us.sentry.io, de.sentry.io) serve the
    # web UI on each organization's own subdomain.
    hostname = parts.hostname.lower()
    if hostname == "sentry.io" or hostname.endswith(".sentry.io"):
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
