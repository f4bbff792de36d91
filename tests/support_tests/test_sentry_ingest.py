"""Tests of the local Sentry ingest server against the real sentry-sdk and OTLP exporter.

The tests send HTTP requests only to servers on 127.0.0.1 that they start themselves.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id
from sentry_sdk.consts import VERSION, EndpointType
from sentry_sdk.utils import Dsn

from tests.support.sentry_fixtures import scoped_sentry_client
from tests.support.sentry_ingest import (
    DEFAULT_PROJECT_ID,
    DEFAULT_PUBLIC_KEY,
    SentryIngest,
    parse_envelope,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 60.0

AUTH_HEADER = {"X-Sentry-Auth": f"Sentry sentry_key={DEFAULT_PUBLIC_KEY}, sentry_version=7"}


def envelope_bytes(
    event: dict[str, Any], *, with_length: bool = True, dsn: str | None = None
) -> bytes:
    headers: dict[str, Any] = {"event_id": event["event_id"]}
    if dsn is not None:
        headers["dsn"] = dsn
    payload = json.dumps(event).encode()
    item_header: dict[str, Any] = {"type": "event", "content_type": "application/json"}
    if with_length:
        item_header["length"] = len(payload)
    return (
        b"\n".join([json.dumps(headers).encode(), json.dumps(item_header).encode(), payload])
        + b"\n"
    )


def sample_event(message: str = "raw message") -> dict[str, Any]:
    return {"event_id": "9ec79c33ec9942ab8353589fcb2e04dc", "message": message, "level": "info"}


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, so sentry_sdk.init cannot touch this process."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.lower().endswith("_proxy") and not name.startswith(("SENTRY_", "OTEL_"))
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        cwd=REPO_ROOT,
        env=environment,
        check=False,
    )


def local_tracer_provider(exporter: OTLPSpanExporter) -> TracerProvider:
    """Return a tracer provider that is not the global one, exporting each span at its end."""
    provider = TracerProvider(resource=Resource.create({"service.name": "ingest-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def sentry_otlp_exporter(dsn: str, **options: Any) -> OTLPSpanExporter:
    """Build the exporter the way sentry_sdk.integrations.otlp.setup_otlp_traces_exporter does."""
    auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    return OTLPSpanExporter(
        endpoint=auth.get_api_url(EndpointType.OTLP_TRACES),
        headers={"X-Sentry-Auth": auth.to_header()},
        **options,
    )


# --- Events from the real sentry-sdk ----------------------------------------------------


def test_sdk_exception_event_parsed(sentry_ingest: SentryIngest) -> None:
    with scoped_sentry_client(sentry_ingest.dsn, release="app@1.2.3", environment="ci"):
        sentry_sdk.set_tag("route", "/users/{id}")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            sentry_sdk.capture_exception()

    events = sentry_ingest.wait_for(1)
    event = events[0]
    exception = event["exception"]["values"][-1]
    assert len(events) == 1
    assert exception["type"] == "ZeroDivisionError"
    assert exception["value"] == "division by zero"
    assert event["level"] == "error"
    assert event["tags"] == {"route": "/users/{id}"}
    assert event["release"] == "app@1.2.3"
    assert event["environment"] == "ci"
    assert sentry_ingest.rejected_requests() == []


def test_sdk_message_event_parsed(sentry_ingest: SentryIngest) -> None:
    with scoped_sentry_client(sentry_ingest.dsn, release="app@2.0.0", environment="staging"):
        sentry_sdk.set_tag("tenant", "acme")
        sentry_sdk.capture_message("cache warm-up finished", level="warning")

    event = sentry_ingest.wait_for(1)[0]
    assert event["message"] == "cache warm-up finished"
    assert event["level"] == "warning"
    assert event["tags"] == {"tenant": "acme"}
    assert event["release"] == "app@2.0.0"
    assert event["environment"] == "staging"


def test_scoped_client_leaves_global_scope(sentry_ingest: SentryIngest) -> None:
    with scoped_sentry_client(sentry_ingest.dsn):
        sentry_sdk.set_tag("inside", "yes")
        assert sentry_sdk.get_client().is_active()
    assert not sentry_sdk.get_client().is_active()

    with scoped_sentry_client(sentry_ingest.dsn):
        sentry_sdk.capture_message("second client")
    event = sentry_ingest.wait_for(1)[0]
    assert "inside" not in event.get("tags", {})


def test_sdk_envelope_wire_format(sentry_ingest: SentryIngest) -> None:
    with scoped_sentry_client(sentry_ingest.dsn):
        sentry_sdk.capture_message("wire format")
    sentry_ingest.wait_for(1)

    request = sentry_ingest.requests()[0]
    # sentry-sdk 2.76.0 switches from gzip to br when it can import brotli.
    expected_encoding = "gzip" if importlib.util.find_spec("brotli") is None else "br"
    assert request.method == "POST"
    assert request.path == f"/api/{DEFAULT_PROJECT_ID}/envelope/"
    assert request.endpoint == "envelope"
    assert request.headers["content-type"] == "application/x-sentry-envelope"
    assert request.headers["content-encoding"] == expected_encoding
    assert request.headers["user-agent"] == f"sentry.python/{VERSION}"
    assert request.headers["x-sentry-auth"].startswith(f"Sentry sentry_key={DEFAULT_PUBLIC_KEY},")
    assert request.status == 200


def test_sdk_uncompressed_envelope_parsed(sentry_ingest: SentryIngest) -> None:
    with scoped_sentry_client(sentry_ingest.dsn, _experiments={"transport_compression_level": 0}):
        sentry_sdk.capture_message("plain body")

    event = sentry_ingest.wait_for(1)[0]
    assert "content-encoding" not in sentry_ingest.requests()[0].headers
    assert event["message"] == "plain body"


def test_sdk_transaction_parsed(sentry_ingest: SentryIngest) -> None:
    with (
        scoped_sentry_client(sentry_ingest.dsn, traces_sample_rate=1.0),
        sentry_sdk.start_transaction(name="GET /health", op="http.server"),
    ):
        pass

    transactions = sentry_ingest.wait_for(1, source="transactions")
    assert transactions[0]["transaction"] == "GET /health"
    assert sentry_ingest.events() == []
    assert [item.type for item in sentry_ingest.envelope_items("transaction")] == ["transaction"]


def test_sdk_wrong_key_rejected(sentry_ingest: SentryIngest) -> None:
    wrong_dsn = sentry_ingest.dsn.replace(DEFAULT_PUBLIC_KEY, "ffffffffffffffffffffffffffffffff")
    with scoped_sentry_client(wrong_dsn):
        sentry_sdk.capture_message("never stored")

    rejected = sentry_ingest.wait_for(1, source="rejected_requests")
    assert rejected[0].status == 401
    assert "invalid public key" in (rejected[0].detail or "")
    assert sentry_ingest.events() == []


# --- Raw requests in the Sentry protocol ------------------------------------------------


def test_wrong_key_response_body(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=envelope_bytes(sample_event()),
        headers={"X-Sentry-Auth": "Sentry sentry_key=wrong, sentry_version=7"},
    )
    assert response.status_code == 401
    assert "invalid public key" in response.json()["detail"]


def test_missing_auth_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/store/",
        content=json.dumps(sample_event()),
    )
    assert response.status_code == 401
    assert "missing authorization" in response.json()["detail"]
    assert len(sentry_ingest.rejected_requests()) == 1


def test_multiple_auth_sources_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/?sentry_key={DEFAULT_PUBLIC_KEY}",
        content=envelope_bytes(sample_event()),
        headers=AUTH_HEADER,
    )
    assert response.status_code == 400
    assert "multiple authorization" in response.json()["detail"]


def test_auth_header_without_prefix_ignored(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/store/",
        content=json.dumps(sample_event()),
        headers={"X-Sentry-Auth": f"sentry_key={DEFAULT_PUBLIC_KEY}"},
    )
    assert response.status_code == 401


def test_basic_auth_accepted(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=envelope_bytes(sample_event("basic auth")),
        auth=(DEFAULT_PUBLIC_KEY, ""),
    )
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "basic auth"


def test_wrong_project_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/999/envelope/",
        content=envelope_bytes(sample_event()),
        headers=AUTH_HEADER,
    )
    assert response.status_code == 403
    assert "project ID mismatch" in response.json()["detail"]
    assert sentry_ingest.events() == []


def test_unknown_path_not_found(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/minidump/", headers=AUTH_HEADER
    )
    assert response.status_code == 404
    assert sentry_ingest.rejected_requests()[0].path == f"/api/{DEFAULT_PROJECT_ID}/minidump/"


def test_get_on_envelope_not_allowed(sentry_ingest: SentryIngest) -> None:
    response = httpx.get(f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/")
    assert response.status_code == 405


def test_health_check_answers(sentry_ingest: SentryIngest) -> None:
    response = httpx.get(f"{sentry_ingest.url}/api/relay/healthcheck/ready/")
    assert response.status_code == 200
    assert response.json() == {"is_healthy": True}


def test_invalid_envelope_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n{"type":"event","length":500}\n{}',
        headers=AUTH_HEADER,
    )
    assert response.status_code == 400
    assert "declares 500 bytes" in response.json()["detail"]


def test_envelope_without_length_parsed(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope",
        content=envelope_bytes(sample_event("no length"), with_length=False),
        headers=AUTH_HEADER,
    )
    assert response.status_code == 200
    assert response.json() == {"id": "9ec79c33ec9942ab8353589fcb2e04dc"}
    assert sentry_ingest.events()[0]["message"] == "no length"


def test_envelope_dsn_header_authenticates(sentry_ingest: SentryIngest) -> None:
    body = envelope_bytes(sample_event("tunneled"), dsn=sentry_ingest.dsn)
    response = httpx.post(f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/", content=body)
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "tunneled"


def test_deflate_envelope_parsed(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=zlib.compress(envelope_bytes(sample_event("deflated"))),
        headers={**AUTH_HEADER, "Content-Encoding": "deflate"},
    )
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "deflated"


def test_brotli_envelope_parsed(sentry_ingest: SentryIngest) -> None:
    brotli = pytest.importorskip("brotli")
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=brotli.compress(envelope_bytes(sample_event("brotli"))),
        headers={**AUTH_HEADER, "Content-Encoding": "br"},
    )
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "brotli"


def test_unknown_encoding_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=envelope_bytes(sample_event()),
        headers={**AUTH_HEADER, "Content-Encoding": "compress"},
    )
    assert response.status_code == 415


def test_store_query_key_accepted(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/store/?sentry_key={DEFAULT_PUBLIC_KEY}&sentry_version=7",
        content=gzip.compress(json.dumps(sample_event("stored")).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "stored"


def test_store_legacy_base64_parsed(sentry_ingest: SentryIngest) -> None:
    body = base64.b64encode(zlib.compress(json.dumps(sample_event("legacy")).encode()))
    response = httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/store/", content=body, headers=AUTH_HEADER
    )
    assert response.status_code == 200
    assert sentry_ingest.events()[0]["message"] == "legacy"


def test_parse_envelope_items() -> None:
    body = (
        b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n'
        b'{"type":"attachment","length":3,"filename":"a.bin"}\nab\n\n'
        b'{"type":"client_report"}\n{"discarded_events":[]}\n'
        b'{"type":"user_report","length":0}\n'
    )
    envelope = parse_envelope(body)
    assert [item.type for item in envelope.items] == ["attachment", "client_report", "user_report"]
    assert envelope.items[0].payload == b"ab\n"
    assert envelope.items[0].json is None
    assert envelope.items[1].json == {"discarded_events": []}
    assert envelope.items[2].payload == b""
    assert envelope.items[2].json is None


def test_concurrent_senders_all_recorded(sentry_ingest: SentryIngest) -> None:
    threads_count, per_thread = 8, 25
    statuses: list[int] = []
    statuses_lock = threading.Lock()

    def send_events() -> None:
        with httpx.Client() as client:
            for _ in range(per_thread):
                response = client.post(
                    f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
                    content=envelope_bytes(sample_event()),
                    headers=AUTH_HEADER,
                )
                with statuses_lock:
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=send_events) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SUBPROCESS_TIMEOUT_S)

    assert statuses == [200] * (threads_count * per_thread)
    assert len(sentry_ingest.events()) == threads_count * per_thread
    assert len(sentry_ingest.requests()) == threads_count * per_thread


# --- OTLP traces ---------------------------------------------------------------------


def test_otlp_exporter_spans_received(sentry_ingest: SentryIngest) -> None:
    provider = local_tracer_provider(sentry_otlp_exporter(sentry_ingest.dsn))
    tracer = provider.get_tracer("ingest-test", "0.1")
    with tracer.start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/users/{id}")
        parent.set_attribute("http.response.status_code", 500)
        parent.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("SELECT users") as child:
            child.set_attribute("db.tags", ["a", "b"])
    provider.shutdown()

    spans = {span.name: span for span in sentry_ingest.wait_for(2, source="otlp_spans")}
    server, database = spans["GET /users/{id}"], spans["SELECT users"]
    assert server.trace_id == format_trace_id(parent.get_span_context().trace_id)
    assert server.span_id == format_span_id(parent.get_span_context().span_id)
    assert server.parent_span_id is None
    assert server.kind == "SPAN_KIND_SERVER"
    assert server.attributes == {"http.route": "/users/{id}", "http.response.status_code": 500}
    assert server.status.code == "STATUS_CODE_ERROR"
    assert server.status.message == "boom"
    assert server.resource_attributes["service.name"] == "ingest-test"
    assert server.scope_name == "ingest-test"
    assert database.trace_id == server.trace_id
    assert database.span_id == format_span_id(child.get_span_context().span_id)
    assert database.parent_span_id == server.span_id
    assert database.kind == "SPAN_KIND_INTERNAL"
    assert database.attributes == {"db.tags": ["a", "b"]}


def test_otlp_request_wire_format(sentry_ingest: SentryIngest) -> None:
    provider = local_tracer_provider(sentry_otlp_exporter(sentry_ingest.dsn))
    with provider.get_tracer("ingest-test").start_as_current_span("one"):
        pass
    provider.shutdown()
    sentry_ingest.wait_for(1, source="otlp_spans")

    request = sentry_ingest.requests()[0]
    assert request.path == f"/api/{DEFAULT_PROJECT_ID}/integration/otlp/v1/traces/"
    assert request.endpoint == "otlp_traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert "content-encoding" not in request.headers
    assert request.headers["x-sentry-auth"].startswith(f"Sentry sentry_key={DEFAULT_PUBLIC_KEY},")
    assert request.status == 200


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_otlp_compressed_without_slash(
    sentry_ingest: SentryIngest, compression: Compression
) -> None:
    exporter = OTLPSpanExporter(
        endpoint=sentry_ingest.otlp_traces_url.rstrip("/"),
        headers={"X-Sentry-Auth": f"Sentry sentry_key={DEFAULT_PUBLIC_KEY}, sentry_version=7"},
        compression=compression,
    )
    provider = local_tracer_provider(exporter)
    with provider.get_tracer("ingest-test").start_as_current_span("compressed"):
        pass
    provider.shutdown()

    spans = sentry_ingest.wait_for(1, source="otlp_spans")
    assert spans[0].name == "compressed"
    assert sentry_ingest.requests()[0].headers["content-encoding"] == compression.value


def test_otlp_wrong_key_rejected(sentry_ingest: SentryIngest) -> None:
    wrong_dsn = sentry_ingest.dsn.replace(DEFAULT_PUBLIC_KEY, "ffffffffffffffffffffffffffffffff")
    provider = local_tracer_provider(sentry_otlp_exporter(wrong_dsn))
    with provider.get_tracer("ingest-test").start_as_current_span("rejected"):
        pass
    provider.shutdown()

    rejected = sentry_ingest.wait_for(1, source="rejected_requests")
    assert rejected[0].status == 401
    assert sentry_ingest.otlp_spans() == []


def test_otlp_json_parsed(sentry_ingest: SentryIngest) -> None:
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "json span",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "retries", "value": {"intValue": "3"}}],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = httpx.post(
        sentry_ingest.otlp_traces_url,
        content=json.dumps(document),
        headers={**AUTH_HEADER, "Content-Type": "application/json"},
    )

    span = sentry_ingest.otlp_spans()[0]
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert span.name == "json span"
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.span_id == "eee19b7ec3c1b174"
    assert span.parent_span_id == "eee19b7ec3c1b173"
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.attributes == {"retries": 3}
    assert span.resource_attributes == {"service.name": "json-svc"}
    assert span.status.code == "STATUS_CODE_OK"
    assert span.start_time_unix_nano == 1544712660000000000


def test_otlp_invalid_protobuf_rejected(sentry_ingest: SentryIngest) -> None:
    response = httpx.post(
        sentry_ingest.otlp_traces_url,
        content=b"\xff\xff\xff",
        headers={**AUTH_HEADER, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/x-protobuf"


def test_sdk_otlp_integration_links_event(sentry_ingest: SentryIngest) -> None:
    code = """
import json, sys
import sentry_sdk
from opentelemetry import trace
from sentry_sdk.integrations.otlp import OTLPIntegration

sentry_sdk.init(dsn=sys.argv[1], integrations=[OTLPIntegration()])
tracer = trace.get_tracer("subprocess")
with tracer.start_as_current_span("checkout") as span:
    try:
        raise ValueError("card declined")
    except ValueError:
        sentry_sdk.capture_exception()
context = span.get_span_context()
sentry_sdk.flush()
trace.get_tracer_provider().force_flush()
print(json.dumps({"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}))
"""
    result = run_python(code, sentry_ingest.dsn)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout.strip().splitlines()[-1])

    event = sentry_ingest.wait_for(1)[0]
    span = sentry_ingest.wait_for(1, source="otlp_spans")[0]
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert event["contexts"]["trace"]["trace_id"] == ids["trace_id"]
    assert event["contexts"]["trace"]["span_id"] == ids["span_id"]
    assert span.name == "checkout"
    assert span.trace_id == ids["trace_id"]
    assert span.span_id == ids["span_id"]
    assert sentry_ingest.rejected_requests() == []


# --- Waiting, clearing and lifecycle ----------------------------------------------------


def test_wait_for_timeout_summarizes(sentry_ingest: SentryIngest) -> None:
    httpx.post(f"{sentry_ingest.url}/api/1/store/", headers=AUTH_HEADER)

    with pytest.raises(AssertionError) as raised:
        sentry_ingest.wait_for(1, timeout_s=0.2)
    message = str(raised.value)
    assert "Timed out after 0.2 s waiting for 1 events" in message
    assert "POST /api/1/store/ -> 403" in message


def test_wait_for_predicate_returns_value(sentry_ingest: SentryIngest) -> None:
    def send_later() -> None:
        httpx.post(
            f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
            content=envelope_bytes(sample_event("late")),
            headers=AUTH_HEADER,
        )

    timer = threading.Timer(0.2, send_later)
    timer.start()
    try:
        found = sentry_ingest.wait_for(
            lambda ingest: next((e for e in ingest.events() if e.get("message") == "late"), None)
        )
    finally:
        timer.join()
    assert found is not None
    assert found["message"] == "late"


def test_wait_for_rejects_bool(sentry_ingest: SentryIngest) -> None:
    with pytest.raises(TypeError):
        sentry_ingest.wait_for(True)


def test_clear_forgets_everything(sentry_ingest: SentryIngest) -> None:
    httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=envelope_bytes(sample_event()),
        headers=AUTH_HEADER,
    )
    sentry_ingest.clear()
    assert sentry_ingest.events() == []
    assert sentry_ingest.requests() == []
    assert sentry_ingest.envelopes() == []


def test_accessors_return_copies(sentry_ingest: SentryIngest) -> None:
    httpx.post(
        f"{sentry_ingest.url}/api/{DEFAULT_PROJECT_ID}/envelope/",
        content=envelope_bytes(sample_event("original")),
        headers=AUTH_HEADER,
    )
    sentry_ingest.events()[0]["message"] = "changed"
    assert sentry_ingest.events()[0]["message"] == "original"


def test_custom_key_and_project_in_dsn() -> None:
    with SentryIngest(public_key="abc", project_id=7) as ingest:
        assert ingest.dsn == f"http://abc@127.0.0.1:{ingest.port}/7"


def test_stop_closes_port() -> None:
    ingest = SentryIngest().start()
    url = ingest.url
    with httpx.Client() as client:
        # The request leaves a keep-alive connection open while stop() runs.
        client.get(f"{url}/api/relay/healthcheck/live/")
        ingest.stop()
        ingest.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/relay/healthcheck/live/")


def test_standalone_prints_dsn() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sentry_ingest", "--port", "0", "--project-id", "9"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        dsn = process.stdout.readline().strip()
        parsed = Dsn(dsn)
        response = httpx.post(
            f"http://{parsed.netloc}/api/9/envelope/",
            content=envelope_bytes(sample_event("standalone")),
            headers={"X-Sentry-Auth": f"Sentry sentry_key={parsed.public_key}"},
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)

    assert parsed.project_id == "9"
    assert response.status_code == 200
    assert "received an envelope with event (standalone)" in stderr
    assert process.returncode == 0
