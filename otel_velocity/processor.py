"""``VelocitySpanProcessor``: feeds SERVER spans from the OpenTelemetry SDK into the registry."""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from otel_velocity.guard import contain_faults
from otel_velocity.registry import UNKNOWN_SERVICE, VelocityRegistry
from otel_velocity.routes import RouteKey, is_server_error, response_status_code, route_key

logger = logging.getLogger(__name__)

# Called after a SERVER span is counted, with the span, its route key, status and error flag.
ServerSpanListener = Callable[[ReadableSpan, RouteKey, "int | None", bool], None]
# Called when a SERVER span starts, on the thread and in the context that will handle the request.
ServerSpanStartListener = Callable[[Span], None]


class VelocitySpanProcessor(SpanProcessor):
    """Counts every SERVER span in a ``VelocityRegistry``; other kinds are ignored.

    Threading: ``on_start`` and ``on_end`` run synchronously on the thread that starts or ends
    the span, which is the thread serving the request (an event loop or a thread pool worker).
    Both are thread-safe, do no I/O and finish in O(1) amortized time: a dictionary lookup and
    one bucket update under the registry's lock.

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

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.kind is not SpanKind.SERVER or self._on_server_span_start is None:
            return
        with contain_faults(logger, "on_start", span.name):
            self._on_server_span_start(span)

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is not SpanKind.SERVER:
            return
        with contain_faults(logger, "on_end", span.name):
            self._count(span)

    def _count(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        key = route_key(attributes)
        status_code = response_status_code(attributes)
        is_error = is_server_error(status_code, span.status.status_code is StatusCode.ERROR)

        start_ns = span.start_time or 0
        end_ns = span.end_time or start_ns
        duration_ms = max(end_ns - start_ns, 0) / 1e6

        service = span.resource.attributes.get("service.name", UNKNOWN_SERVICE)
        context = span.context
        self.registry.record(
            service if isinstance(service, str) else UNKNOWN_SERVICE,
            key,
            duration_ms,
            is_error,
            status_code,
            context.trace_id if context is not None else 0,
            context.span_id if context is not None else 0,
        )

        if self._on_server_span_end is not None:
            self._on_server_span_end(span, key, status_code, is_error)

    def shutdown(self) -> None:
        """Nothing to release: the registry lives in memory and holds no threads."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return True at once: ``on_end`` buffers nothing."""
        return True
