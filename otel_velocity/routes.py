"""Route keys: ``METHOD /route-template`` from the HTTP attributes of a SERVER span.

Both generations of the HTTP semantic conventions are read: the stable names
(``http.request.method``, ``http.response.status_code``) and the older ones (``http.method``,
``http.status_code``). The template comes from ``http.route`` only. The raw URL path and the span
name are never used, so a request without a template (a 404, an unrouted path) lands in one
``(unmatched)`` row per method, whatever its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

UNMATCHED_ROUTE = "(unmatched)"
OVERFLOW_METHOD = "*"
OVERFLOW_ROUTE = "(overflow)"
OTHER_METHOD = "_OTHER"

# Sentry drops tag values over 200 characters, and the route is sent as a tag.
MAX_ROUTE_LENGTH = 200

# The methods of RFC 9110 and RFC 5789; semantic conventions report any other as "_OTHER".
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)

_CONTROL_CHARACTERS = {code: " " for code in (*range(0x20), 0x7F)}


@dataclass(frozen=True, slots=True)
class RouteKey:
    """One row of the velocity table within a service."""

    method: str
    route: str

    def __str__(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def is_unmatched(self) -> bool:
        return self.route == UNMATCHED_ROUTE

    @classmethod
    def parse(cls, text: str) -> RouteKey:
        """Parse ``"GET /items/{item_id}"`` as shown in the table; raise ValueError otherwise."""
        method, separator, route = text.partition(" ")
        if not separator or not method or not route:
            raise ValueError(
                f"invalid route key {text!r}: expected 'METHOD /template', "
                "for example 'GET /items/{item_id}'"
            )
        return cls(method, route)


OVERFLOW_KEY = RouteKey(OVERFLOW_METHOD, OVERFLOW_ROUTE)


def request_method(attributes: Mapping[str, object]) -> str:
    """Return the normalized HTTP method, or ``_OTHER`` for a missing or non-standard one."""
    method = attributes.get("http.request.method")
    if method is None:
        method = attributes.get("http.method")
    if not isinstance(method, str):
        return OTHER_METHOD

    method = method.upper()
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_template(attributes: Mapping[str, object]) -> str | None:
    """Return ``http.route`` cleaned of control characters and cut to ``MAX_ROUTE_LENGTH``."""
    route = attributes.get("http.route")
    if not isinstance(route, str):
        return None

    # Cut before stripping, so the row, the Sentry tag and the deep link agree on the value.
    route = route.translate(_CONTROL_CHARACTERS)[:MAX_ROUTE_LENGTH].strip()
    return route or None


def response_status_code(attributes: Mapping[str, object]) -> int | None:
    """Return the HTTP status code as an int, or None when it is missing or not a valid code."""
    status = attributes.get("http.response.status_code")
    if status is None:
        status = attributes.get("http.status_code")

    if isinstance(status, bool):
        return None
    # Only three ASCII digits: int() raises on "²", which isdigit() accepts, and on strings
    # longer than 4,300 digits.
    if isinstance(status, str) and len(status) == 3 and status.isascii() and status.isdigit():
        status = int(status)
    if isinstance(status, int) and 100 <= status <= 999:
        return status
    return None


def route_key(attributes: Mapping[str, object]) -> RouteKey:
    """Build the route key of a SERVER span from its attributes."""
    template = route_template(attributes)
    return RouteKey(request_method(attributes), template or UNMATCHED_ROUTE)


def is_server_error(status_code: int | None, span_status_is_error: bool) -> bool:
    """Return whether a SERVER span counts as an error: a 5xx, or no status and span status ERROR.

    A 4xx is the client's error, not the service's.
    """
    if status_code is not None:
        return status_code >= 500
    return span_status_is_error
