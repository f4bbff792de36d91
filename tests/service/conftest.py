"""Shared fixtures for the service tests.

pyproject.toml puts ``service/`` on ``sys.path`` (pytest ``pythonpath``),
so these tests import ``otel_velocity_service`` without installing it.
"""

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from otel_velocity_service import ServiceSettings, create_app

# Importing the fixtures here registers them for every test in this folder.
from page_fixtures import (  # noqa: F401
    browser_page,
    chromium_browser,
    velocity_server,
    velocity_server_session,
)

from otel_velocity import VelocityRegistry, WindowSettings
from tests.support.clock import ManualClock
from tests.support.uvicorn_thread import serve_in_thread

# --- The real service, spans and a manual clock, for test_api_*, test_otlp_* and test_demo ---


def serve_app(app: Any) -> AbstractContextManager[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    return serve_in_thread(app)


@dataclass
class RunningService:
    """The velocity service running under uvicorn, with its registry and clock."""

    base_url: str
    app: FastAPI
    registry: VelocityRegistry
    clock: ManualClock

    def url(self, path: str) -> str:
        return self.base_url + path

    def table(self, **params: Any) -> dict[str, Any]:
        """Return the JSON of ``GET /ops/velocity``, failing the test on any other status."""
        response = httpx.get(self.url("/ops/velocity"), params=params, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def rows(self, **params: Any) -> dict[tuple[str, str], dict[str, Any]]:
        """Return the table's rows by (service, key)."""
        return {(row["service"], row["key"]): row for row in self.table(**params)["rows"]}


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def start_service(manual_clock: ManualClock) -> Iterator[Callable[..., RunningService]]:
    """Start services on demand: ``start_service(settings=..., window=..., max_routes=...)``.

    Settings default to ``ServiceSettings()``, never the environment, so the developer's
    SENTRY_* or VELOCITY_* variables cannot change a test. Every service stops at teardown.
    """
    with ExitStack() as stack:

        def start(
            settings: ServiceSettings | None = None,
            window: WindowSettings | None = None,
            max_routes: int = 1000,
            max_services: int = 100,
        ) -> RunningService:
            registry = VelocityRegistry(
                window, max_routes=max_routes, max_services=max_services, clock=manual_clock
            )
            app = create_app(registry, settings or ServiceSettings(), clock=manual_clock)
            base_url = stack.enter_context(serve_app(app))
            return RunningService(base_url, app, registry, manual_clock)

        yield start


@pytest.fixture
def service(start_service: Callable[..., RunningService]) -> RunningService:
    """The service with default settings."""
    return start_service()


class ServerSpans:
    """Real OpenTelemetry SDK spans, one tracer provider per service.name.

    ``add`` ends a span right away with the given duration. ``export`` sends every span added
    so far with the SDK's OTLP/HTTP protobuf exporter. ``protobuf_body`` and ``json_body``
    encode them as the exporters would.
    """

    def __init__(self) -> None:
        self._memory = InMemorySpanExporter()
        self._providers: dict[str, TracerProvider] = {}

    def add(
        self,
        route: str | None,
        *,
        service: str = "shop",
        method: str = "GET",
        status_code: int | None = 200,
        duration_ms: float = 10.0,
        kind: SpanKind = SpanKind.SERVER,
        stable_conventions: bool = False,
        span_error: bool = False,
    ) -> ReadableSpan:
        """Add one finished span; ``route`` None leaves out http.route (an unrouted request)."""
        attributes: dict[str, Any] = {}
        if stable_conventions:
            attributes["http.request.method"] = method
            if status_code is not None:
                attributes["http.response.status_code"] = status_code
        else:
            attributes["http.method"] = method
            if status_code is not None:
                attributes["http.status_code"] = status_code
        if route is not None:
            attributes["http.route"] = route

        tracer = self._provider(service).get_tracer("tests.service")
        start_ns = time.time_ns()
        span = tracer.start_span(
            f"{method} {route}", kind=kind, attributes=attributes, start_time=start_ns
        )
        if span_error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start_ns + round(duration_ms * 1e6))
        return self._memory.get_finished_spans()[-1]

    def spans(self) -> list[ReadableSpan]:
        return list(self._memory.get_finished_spans())

    def clear(self) -> None:
        self._memory.clear()

    def export(self, base_url: str, headers: dict[str, str] | None = None) -> SpanExportResult:
        exporter = OTLPSpanExporter(endpoint=f"{base_url}/v1/traces", headers=headers, timeout=5)
        try:
            return exporter.export(self.spans())
        finally:
            exporter.shutdown()

    def request(self) -> ExportTraceServiceRequest:
        return encode_spans(self.spans())

    def protobuf_body(self) -> bytes:
        return self.request().SerializeToString()

    def json_body(self) -> bytes:
        return to_otlp_json(self.request()).encode()

    def _provider(self, service: str) -> TracerProvider:
        provider = self._providers.get(service)
        if provider is None:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(self._memory))
            self._providers[service] = provider
        return provider


def to_otlp_json(request: ExportTraceServiceRequest) -> str:
    """Encode a request in OTLP/JSON: lowerCamelCase keys, enums as integers, hex ids."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return json_format.json.dumps(document)


@pytest.fixture
def server_spans() -> ServerSpans:
    return ServerSpans()
