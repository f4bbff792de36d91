import threading

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_velocity.guard import FAULTS
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import RouteKey

THREADS = 8
SPANS_PER_THREAD = 2_000


def _provider(processor: VelocitySpanProcessor, service: str = "shop") -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    return provider


def _server_span(provider: TracerProvider, route: str, status: int) -> None:
    tracer = provider.get_tracer("test")
    attributes = {
        "http.request.method": "GET",
        "http.route": route,
        "http.response.status_code": status,
    }
    with tracer.start_as_current_span("GET " + route, kind=SpanKind.SERVER, attributes=attributes):
        pass


def test_processor_counts_exactly_under_threads() -> None:
    registry = VelocityRegistry(clock=lambda: 5000.0)
    provider = _provider(VelocitySpanProcessor(registry))
    barrier = threading.Barrier(THREADS)

    def serve(worker: int) -> None:
        barrier.wait()
        for i in range(SPANS_PER_THREAD):
            status = 500 if i % 100 == 0 else 200
            _server_span(provider, f"/w/{{id}}/{worker % 2}", status)

    threads = [threading.Thread(target=serve, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    rows = {str(row.key): row.window for row in registry.rows()}
    assert set(rows) == {"GET /w/{id}/0", "GET /w/{id}/1"}
    assert rows["GET /w/{id}/0"].count == THREADS // 2 * SPANS_PER_THREAD
    assert rows["GET /w/{id}/1"].count == THREADS // 2 * SPANS_PER_THREAD
    assert rows["GET /w/{id}/0"].errors == THREADS // 2 * SPANS_PER_THREAD // 100


def test_processor_ignores_other_span_kinds() -> None:
    registry = VelocityRegistry(clock=lambda: 5000.0)
    provider = _provider(VelocitySpanProcessor(registry))
    tracer = provider.get_tracer("test")
    for kind in (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER):
        with tracer.start_as_current_span("x", kind=kind, attributes={"http.route": "/a"}):
            pass

    assert registry.rows() == []


def test_processor_reads_service_name_and_error_status() -> None:
    registry = VelocityRegistry(clock=lambda: 5000.0)
    provider = _provider(VelocitySpanProcessor(registry), service="billing")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.method", "GET")
        span.set_status(Status(StatusCode.ERROR))

    rows = registry.rows()
    assert [(r.service, r.key) for r in rows] == [("billing", RouteKey("GET", "(unmatched)"))]
    assert rows[0].window.errors == 1


def test_processor_contains_faults() -> None:
    registry = VelocityRegistry(clock=lambda: 5000.0)

    def broken_end(span: ReadableSpan, key: RouteKey, status: int | None, is_error: bool) -> None:
        raise RuntimeError("listener bug")

    def broken_start(span: Span) -> None:
        raise RuntimeError("listener bug")

    processor = VelocitySpanProcessor(
        registry, on_server_span_start=broken_start, on_server_span_end=broken_end
    )
    provider = _provider(processor)
    before = FAULTS.counts()

    _server_span(provider, "/a", 200)
    _server_span(provider, "/a", 200)

    after = FAULTS.counts()
    assert after.get("on_end", 0) - before.get("on_end", 0) == 2
    assert after.get("on_start", 0) - before.get("on_start", 0) == 2
    assert registry.rows()[0].window.count == 2


def test_processor_survives_broken_span() -> None:
    registry = VelocityRegistry(clock=lambda: 5000.0)
    processor = VelocitySpanProcessor(registry)
    before = FAULTS.counts().get("on_end", 0)

    class BrokenSpan:
        kind = SpanKind.SERVER
        name = "broken"

        @property
        def attributes(self) -> dict[str, object]:
            raise ValueError("attributes unavailable")

    processor.on_end(BrokenSpan())  # type: ignore[arg-type]

    assert FAULTS.counts().get("on_end", 0) == before + 1
