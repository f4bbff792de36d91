"""``VelocitySpanProcessor``: feeds SERVER spans from the OpenTelemetry SDK into the registry."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from otel_velocity.guard import contain_faults
from otel_velocity.registry import UNKNOWN_SERVICE, VelocityRegistry
from otel_velocity.routes import (
    MAX_ROUTE_LENGTH,
    RouteKey,
    is_server_error,
    response_status_code,
    route_key,
)

logger = logging.getLogger(__name__)

# Called after a SERVER span is counted, with the span, its route key, status and error flag.
ServerSpanListener = Callable[[ReadableSpan, RouteKey, "int | None", bool], None]
# Called when a SERVER span starts, on the thread and in the context that will handle the request.
ServerSpanStartListener = Callable[[Span], None]

# Distinct (method, route) attribute pairs whose route key is cached; others are built per span.
MAX_CACHED_ROUTE_KEYS = 4096
_NO_ATTRIBUTES: Mapping[str, object] = {}


class VelocitySpanProcessor(SpanProcessor):
    """Counts every SERVER span in a ``VelocityRegistry``; other kinds are ignored.

    Threading: ``on_start`` and ``on_end`` run synchronously on the thread that starts or ends
    the span, which is the thread serving the request (an event loop or a thread pool worker).
    Both are thread-safe, do no I/O and finish in O(1) amortized time: a few dictionary lookups
    and one bucket update under the registry's lock. ``python -m benchmarks --only span_cost``
    measures ``on_end``.

    Failure: neither hook ever raises into the app. A fault is counted in
    ``otel_velocity.guard.FAULTS`` and logged with the span name, at most once a minute.
    """

    def __init__(
        self,
        registry: VelocityRegistry,
        *,
        on_server_span_start: ServerSpanStartListener | None = None,
        on_server_span_end: ServerSpanListener | None = None,
    ) -> None:
        self.registry = registry
        self._on_server_span_start = on_server_span_start
        self._on_server_span_end = on_server_span_end
        # Raw (method, http.route) attribute values -> route key. Reads and writes of a dict are
        # atomic, so threads need no lock; two threads may build the same key once each.
        self._route_keys: dict[tuple[object, object], RouteKey] = {}
        self._last_service: tuple[Resource | None, str] = (None, UNKNOWN_SERVICE)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.kind is not SpanKind.SERVER or self._on_server_span_start is None:
            return
        # A ``try`` instead of ``contain_faults`` on the way in, for the reason given in on_end.
        try:
            self._on_server_span_start(span)
        except Exception as error:
            with contain_faults(logger, "on_start", span.name):
                raise error

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is not SpanKind.SERVER:
            return
        # ``contain_faults`` is a generator-based context manager that costs about a microsecond
        # per use, half of this hook's budget. A ``try`` costs nothing until a fault, which is
        # then handed to the same guard to be counted and logged. The body is inlined for the
        # same reason, because each Python call costs about 0.1 µs (benchmarks/span_cost.py).
        try:
            attributes = span.attributes or _NO_ATTRIBUTES
            method = attributes.get("http.request.method")
            if method is None:
                method = attributes.get("http.method")
            raw_key = (method, attributes.get("http.route"))
            try:
                key = self._route_keys.get(raw_key)
            except TypeError:  # An unhashable value, possible only in hand-built spans.
                key = None
            if key is None:
                key = self._new_route_key(raw_key, attributes)

            status = attributes.get("http.response.status_code")
            if status is None:
                status = attributes.get("http.status_code")
            if type(status) is int and 100 <= status <= 999:
                status_code: int | None = status
                is_error = status >= 500  # As is_server_error decides when there is a status.
            else:
                status_code = response_status_code(attributes)
                is_error = is_server_error(status_code, span.status.status_code is StatusCode.ERROR)

            start_ns = span.start_time or 0
            end_ns = span.end_time or start_ns
            duration_ms = (end_ns - start_ns) / 1e6 if end_ns > start_ns else 0.0

            resource = span.resource
            cached_resource, service = self._last_service
            if resource is not cached_resource:
                service = self._service_name(resource)

            context = span.context
            self.registry.record(
                service,
                key,
                duration_ms,
                is_error,
                status_code,
                context.trace_id if context is not None else 0,
                context.span_id if context is not None else 0,
            )

            if self._on_server_span_end is not None:
                self._on_server_span_end(span, key, status_code, is_error)
        except Exception as error:
            with contain_faults(logger, "on_end", span.name):
                raise error

    def _new_route_key(
        self, raw_key: tuple[object, object], attributes: Mapping[str, object]
    ) -> RouteKey:
        """Build the route key of a span and cache it under its raw method and route values.

        ``route_key`` reads nothing else, and building a key costs more than a lookup.
        """
        key = route_key(attributes)
        # Only short strings are kept as cache keys: a full cache of 16 KB http.route values,
        # which a router that reports raw paths can produce, would hold 64 MB.
        if len(self._route_keys) < MAX_CACHED_ROUTE_KEYS and all(map(_is_short, raw_key)):
            with contextlib.suppress(TypeError):
                self._route_keys[raw_key] = key
        return key

    def _service_name(self, resource: Resource) -> str:
        """Return ``service.name`` and cache it: one provider's spans share one resource."""
        name = resource.attributes.get("service.name", UNKNOWN_SERVICE)
        if not isinstance(name, str):
            name = UNKNOWN_SERVICE
        self._last_service = (resource, name)
        return name

    def shutdown(self) -> None:
        """Nothing to release: the registry lives in memory and holds no threads."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return True at once: ``on_end`` buffers nothing."""
        return True


def _is_short(value: object) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= MAX_ROUTE_LENGTH)
