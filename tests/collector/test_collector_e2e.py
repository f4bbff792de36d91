"""End-to-end: OTel SDK -> real Collector with collector.yaml -> OTLP/HTTP sinks.

One sink plays the velocity service and one plays Sentry's OTLP traces
endpoint. Both are real HTTP servers on 127.0.0.1 that decode what the
Collector's otlp_http exporters send.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.otlp_sink import OtlpTraceSink

SENTRY_PROJECT_ID = "4242"
SENTRY_TRACES_PATH = f"/api/{SENTRY_PROJECT_ID}/integration/otlp/v1/traces"
SENTRY_PUBLIC_KEY = "e2e-public-key"
VELOCITY_TRACES_PATH = "/v1/traces"

# Seconds to wait for spans to arrive at a sink. With OTELCOL_BATCH_TIMEOUT
# at 100ms they arrive in well under a second on an idle machine.
DELIVERY_TIMEOUT_SECONDS = 15.0
SDK_EXPORT_TIMEOUT_SECONDS = 10


@pytest.fixture
def velocity_sink() -> Iterator[OtlpTraceSink]:
    with OtlpTraceSink() as sink:
        yield sink


@pytest.fixture
def sentry_sink() -> Iterator[OtlpTraceSink]:
    with OtlpTraceSink() as sink:
        yield sink


@pytest.fixture
def sink_env(collector_env, velocity_sink, sentry_sink) -> dict[str, str]:
    """collector_env with the velocity exporter and the Sentry exporter pointed at the two sinks."""
    collector_env["VELOCITY_OTLP_ENDPOINT"] = velocity_sink.url
    collector_env["SENTRY_OTLP_TRACES_ENDPOINT"] = sentry_sink.url + SENTRY_TRACES_PATH
    collector_env["SENTRY_PUBLIC_KEY"] = SENTRY_PUBLIC_KEY
    return collector_env


def make_server_spans(service_name: str) -> list[ReadableSpan]:
    """Record two traces, each a SERVER span with one INTERNAL child, with the real SDK."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("tests.collector")

    for route in ("/items/{item_id}", "/orders"):
        with tracer.start_as_current_span(f"GET {route}", kind=SpanKind.SERVER) as server_span:
            server_span.set_attribute("http.request.method", "GET")
            server_span.set_attribute("http.route", route)
            with tracer.start_as_current_span(f"load {route}", kind=SpanKind.INTERNAL):
                pass

    provider.shutdown()
    return list(recorder.get_finished_spans())


def export_with_sdk(
    protocol: str, spans: list[ReadableSpan], grpc_endpoint: str, http_endpoint: str
) -> SpanExportResult:
    if protocol == "grpc":
        exporter = GrpcSpanExporter(
            endpoint=grpc_endpoint, insecure=True, timeout=SDK_EXPORT_TIMEOUT_SECONDS
        )
    else:
        exporter = HttpSpanExporter(
            endpoint=f"http://{http_endpoint}/v1/traces", timeout=SDK_EXPORT_TIMEOUT_SECONDS
        )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def span_identities(spans) -> set[tuple[bytes, bytes, str]]:
    """(trace id, span id, name) of SDK spans or of OTLP protobuf spans, as 16- and 8-byte ids."""
    identities = set()
    for span in spans:
        if isinstance(span, ReadableSpan):
            context = span.get_span_context()
            identities.add(
                (
                    context.trace_id.to_bytes(16, "big"),
                    context.span_id.to_bytes(8, "big"),
                    span.name,
                )
            )
        else:
            identities.add((span.trace_id, span.span_id, span.name))
    return identities


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_collector_forwards_spans_to_both_exporters(
    protocol, start_collector, sink_env, velocity_sink, sentry_sink
):
    collector = start_collector(sink_env)
    sent = make_server_spans(service_name=f"e2e-{protocol}")

    result = export_with_sdk(protocol, sent, collector.grpc_endpoint, collector.http_endpoint)
    assert result == SpanExportResult.SUCCESS

    velocity_sink.wait_for_spans(len(sent), timeout=DELIVERY_TIMEOUT_SECONDS)
    sentry_sink.wait_for_spans(len(sent), timeout=DELIVERY_TIMEOUT_SECONDS)
    # A graceful stop flushes the exporters' queues, so nothing can arrive
    # after this point and the counts below are final.
    assert collector.stop() == 0, collector.log_tail()

    velocity_spans = velocity_sink.spans()
    sentry_spans = sentry_sink.spans()
    assert len(velocity_spans) == len(sent)
    assert len(sentry_spans) == len(sent)
    assert span_identities(velocity_spans) == span_identities(sent)
    assert span_identities(sentry_spans) == span_identities(sent)
    assert {span.kind for span in velocity_spans} == {
        Span.SPAN_KIND_SERVER,
        Span.SPAN_KIND_INTERNAL,
    }

    for export in velocity_sink.exports:
        assert export.path == VELOCITY_TRACES_PATH
        assert export.headers.get("content-encoding") == "gzip"
        assert "x-sentry-auth" not in export.headers
        service_names = {
            attribute.value.string_value
            for resource_spans in export.request.resource_spans
            for attribute in resource_spans.resource.attributes
            if attribute.key == "service.name"
        }
        assert service_names == {f"e2e-{protocol}"}

    for export in sentry_sink.exports:
        assert export.path == SENTRY_TRACES_PATH
        assert export.headers.get("content-encoding") == "gzip"
        assert export.headers.get("x-sentry-auth") == f"sentry sentry_key={SENTRY_PUBLIC_KEY}"

    assert velocity_sink.rejected == []
    assert sentry_sink.rejected == []


def test_collector_velocity_only_mode_skips_sentry(
    start_collector, sink_env, velocity_sink, sentry_sink
):
    sink_env["OTELCOL_TRACES_EXPORTERS"] = "[otlp_http/velocity]"
    collector = start_collector(sink_env)
    sent = make_server_spans(service_name="e2e-velocity-only")

    result = export_with_sdk("http", sent, collector.grpc_endpoint, collector.http_endpoint)
    assert result == SpanExportResult.SUCCESS

    velocity_sink.wait_for_spans(len(sent), timeout=DELIVERY_TIMEOUT_SECONDS)
    assert collector.stop() == 0, collector.log_tail()

    assert span_identities(velocity_sink.spans()) == span_identities(sent)
    assert len(velocity_sink.spans()) == len(sent)
    assert sentry_sink.exports == []
    assert sentry_sink.rejected == []
