"""The request being handled, as seen by Sentry event processors.

The SERVER span's start hook stores a ``RequestContext`` in a context variable. The ASGI and WSGI
servers run each request in its own context (a task, or a thread-pool call that copies the
context), so concurrent requests never see each other's context. The value stays set after the
span ends, so an exception that Sentry captures in a middleware outside the OpenTelemetry one
still gets the request's route and trace.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan

from otel_velocity.routes import RouteKey, route_key


@dataclass(slots=True)
class RequestContext:
    """The SERVER span of the current request and what happened to it so far."""

    span: ReadableSpan
    status_code: int | None = None
    ended: bool = False
    exception_captured: bool = False

    def is_for(self, span: ReadableSpan) -> bool:
        """Return whether ``span`` is this request's span; ``on_end`` receives a copy of it."""
        mine, theirs = self.span.context, span.context
        return mine is not None and theirs is not None and mine.span_id == theirs.span_id

    @property
    def route_key(self) -> RouteKey:
        """Read the route from the live span: some frameworks set ``http.route`` after start."""
        return route_key(self.span.attributes or {})

    @property
    def trace_id_hex(self) -> str:
        return format(self.span.context.trace_id, "032x") if self.span.context else ""

    @property
    def span_id_hex(self) -> str:
        return format(self.span.context.span_id, "016x") if self.span.context else ""


# NOTE: a WSGI server that reuses threads keeps the last request's value in each worker thread
# until the thread serves another request; an event captured outside a request on that thread
# would carry the previous request's tags.
current_request: ContextVar[RequestContext | None] = ContextVar(
    "otel_velocity_request", default=None
)
