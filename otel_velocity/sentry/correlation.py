"""Sentry correlation for SERVER spans.

* Every event captured while a request is handled gets the tags ``route``, ``method`` and
  ``build_time``, the transaction name ``METHOD /route`` and the OpenTelemetry trace and span ids
  in its trace context.
* A 5xx response that did not raise becomes one error event, fingerprinted per route and status.
  A 5xx caused by an exception is left to the exception event that Sentry's framework
  integration captures: the span then carries an ``exception`` event, or the exception event
  passed through ``process_event`` during the request.
* Sentry's own tracing stays off: with it, events would carry Sentry's trace id instead of the
  OpenTelemetry one. Spans reach Sentry through sentry-sdk's OTLP integration instead.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, get_current_span

from otel_velocity.config import SentrySettings
from otel_velocity.guard import contain_faults
from otel_velocity.routes import RouteKey
from otel_velocity.sentry.request_context import RequestContext, current_request
from otel_velocity.sentry.tags import tag_value

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Hint = dict[str, Any]

FINGERPRINT_PREFIX = "otel-velocity-http-5xx"


class SentryCorrelation:
    """The hooks that tie Sentry events to the request's SERVER span.

    ``on_server_span_start`` and ``on_server_span_end`` are called by ``VelocitySpanProcessor``
    on the request's thread; ``process_event`` and ``trace_context`` by sentry-sdk on the thread
    that captures an event. All of them are O(1), and none of them raises into the app.
    """

    def __init__(self, settings: SentrySettings) -> None:
        self.settings = settings

    def on_server_span_start(self, span: Span) -> None:
        current_request.set(RequestContext(span))

    def on_server_span_end(
        self, span: ReadableSpan, key: RouteKey, status_code: int | None, is_error: bool
    ) -> None:
        request = current_request.get()
        if request is not None and request.is_for(span):
            request.status_code = status_code
            request.ended = True
        else:
            request = None

        if status_code is None or status_code < 500:
            return
        if request is not None and request.exception_captured:
            return
        if any(event.name == "exception" for event in span.events):
            return

        import sentry_sdk

        # sentry-sdk types events as a TypedDict; a plain dict with its keys is what it accepts.
        sentry_sdk.capture_event(self._server_error_event(span, key, status_code))  # type: ignore[arg-type]

    def process_event(self, event: Event, hint: Hint) -> Event:
        """Add the request's tags and trace context to an event; a sentry-sdk event processor."""
        with contain_faults(logger, "process_event", event.get("event_id")):
            tags = event.setdefault("tags", {})
            if self.settings.build_time:
                tags.setdefault("build_time", tag_value(self.settings.build_time))

            request = current_request.get()
            if request is None:
                return event

            key = request.route_key
            tags["route"] = tag_value(key.route)
            tags["method"] = tag_value(key.method)
            event["transaction"] = tag_value(str(key))
            # sentry-sdk's ASGI event processor (2.76) runs after this global one and replaces a
            # transaction whose source is not a route with the raw URL of an unrouted request.
            event["transaction_info"] = {"source": "route"}
            status_code = request.status_code if request.ended else _exception_status(hint)
            if status_code is not None:
                tags.setdefault("status_code", str(status_code))

            trace = event.setdefault("contexts", {}).setdefault("trace", {})
            if trace.get("trace_id") != request.trace_id_hex:
                trace["trace_id"] = request.trace_id_hex
                trace["span_id"] = request.span_id_hex

            if "exception" in event:
                request.exception_captured = True
        return event

    def trace_context(self) -> tuple[str, str] | None:
        """Return the (trace id, span id) for events: the current span, else the request's."""
        context = get_current_span().get_span_context()
        if context.trace_id != INVALID_TRACE_ID and context.span_id != INVALID_SPAN_ID:
            return format(context.trace_id, "032x"), format(context.span_id, "016x")

        request = current_request.get()
        if request is None or request.span.context is None:
            return None
        return request.trace_id_hex, request.span_id_hex

    def _server_error_event(self, span: ReadableSpan, key: RouteKey, status_code: int) -> Event:
        start_ns = span.start_time or 0
        duration_ms = max((span.end_time or start_ns) - start_ns, 0) / 1e6
        context = span.context
        route = tag_value(key.route)
        method = tag_value(key.method)

        return {
            "level": "error",
            "message": f"{method} {route} responded with HTTP {status_code}",
            "logger": "otel_velocity",
            "transaction": tag_value(str(key)),
            "tags": {"route": route, "method": method, "status_code": str(status_code)},
            "fingerprint": [FINGERPRINT_PREFIX, method, route, str(status_code)],
            "contexts": {
                "trace": {
                    "trace_id": format(context.trace_id, "032x") if context else "",
                    "span_id": format(context.span_id, "016x") if context else "",
                },
                "response": {"status_code": status_code},
                # Not the span name: an instrumentation may name an unrouted span after its
                # raw path, which can carry ids.
                "otel_velocity": {"duration_ms": round(duration_ms, 3)},
            },
        }


def _exception_status(hint: Hint) -> int | None:
    """Return the status an exception will respond with, while the response is not sent yet.

    HTTP exceptions of Starlette, FastAPI and Werkzeug carry ``status_code`` or ``code``; any
    other exception that escapes a handler becomes a 500 in those frameworks.
    """
    exc_info = hint.get("exc_info") if hint else None
    if not exc_info or exc_info[1] is None:
        return None
    exception = exc_info[1]
    for attribute in ("status_code", "code"):
        value = getattr(exception, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return 500
