"""``POST /v1/traces`` over raw HTTP: encodings, gzip, partial success and the error responses."""

from __future__ import annotations

import gzip
import json
import os
import time

import httpx
import pytest
from conftest import serve_app
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otel_velocity_service import ServiceSettings, create_app

from otel_velocity import VelocityRegistry

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post(service, body: bytes, content_type: str = PROTOBUF, **headers: str) -> httpx.Response:
    return httpx.post(
        service.url("/v1/traces"),
        content=body,
        headers={"Content-Type": content_type, **headers},
        timeout=10,
    )


def protobuf_status(response: httpx.Response) -> Status:
    assert response.headers["content-type"] == PROTOBUF
    return Status.FromString(response.content)


def server_span(route: str, *, start_ns: int | None = None, duration_ns: int = 5_000_000) -> Span:
    """A valid SERVER span built directly as a protobuf message."""
    start_ns = start_ns if start_ns is not None else time.time_ns()
    span = Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name=f"GET {route}",
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration_ns,
    )
    span.attributes.extend(
        [
            KeyValue(key="http.method", value=AnyValue(string_value="GET")),
            KeyValue(key="http.route", value=AnyValue(string_value=route)),
            KeyValue(key="http.status_code", value=AnyValue(int_value=200)),
        ]
    )
    return span


def export_request(spans: list[Span], service_name: str = "shop") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service_name))
    )
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


# --- Encodings -----------------------------------------------------------------------------


def test_protobuf_success_answers_protobuf(service, server_spans):
    server_spans.add("/items/{item_id}")

    response = post(service, server_spans.protobuf_body())

    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")


def test_json_request_counts_spans(service, server_spans):
    server_spans.add("/items/{item_id}")
    server_spans.add("/items/{item_id}", status_code=500)
    server_spans.add(None, status_code=404)

    response = post(service, server_spans.json_body(), JSON)

    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {}
    rows = service.rows()
    assert rows["shop", "GET /items/{item_id}"]["count"] == 2
    assert rows["shop", "GET /items/{item_id}"]["errors"] == 1
    assert rows["shop", "GET (unmatched)"]["count"] == 1


def test_json_request_keeps_hex_ids(service, server_spans):
    span = server_spans.add("/pay", status_code=503)

    post(service, server_spans.json_body(), JSON)

    exemplar = service.rows()["shop", "GET /pay"]["exemplars"][0]
    assert exemplar["trace_id"] == format(span.context.trace_id, "032x")
    assert exemplar["span_id"] == format(span.context.span_id, "016x")


def test_json_uppercase_hex_and_string_int64(service):
    start_ns = time.time_ns()
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "hand-written"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "POST /orders",
                                "kind": 2,
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(start_ns + 7_000_000),
                                "attributes": [
                                    {
                                        "key": "http.request.method",
                                        "value": {"stringValue": "POST"},
                                    },
                                    {"key": "http.route", "value": {"stringValue": "/orders"}},
                                    {
                                        "key": "http.response.status_code",
                                        "value": {"intValue": "201"},
                                    },
                                ],
                                "status": {"code": 0},
                                "futureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }

    response = post(service, json.dumps(document).encode(), JSON)

    assert response.status_code == 200, response.text
    row = service.rows()["web", "POST /orders"]
    assert row["count"] == 1
    assert row["p50_ms"] == pytest.approx(7.0, rel=0.01)
    assert row["exemplars"][0]["trace_id"] == "5b8efff798038103d269b633813fc60c"


def test_content_type_with_charset_accepted(service, server_spans):
    server_spans.add("/items/{item_id}")

    response = post(service, server_spans.json_body(), "application/json; charset=utf-8")

    assert response.status_code == 200
    assert service.rows()["shop", "GET /items/{item_id}"]["count"] == 1


def test_empty_request_succeeds(service):
    response = post(service, b"")

    assert response.status_code == 200
    assert service.table()["rows"] == []


# --- gzip ----------------------------------------------------------------------------------


def test_gzip_protobuf_request(service, server_spans):
    server_spans.add("/items/{item_id}")
    server_spans.add("/items/{item_id}")

    response = post(
        service, gzip.compress(server_spans.protobuf_body()), **{"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200
    assert service.rows()["shop", "GET /items/{item_id}"]["count"] == 2


def test_gzip_json_request(service, server_spans):
    server_spans.add("/search")

    response = post(
        service, gzip.compress(server_spans.json_body()), JSON, **{"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200
    assert service.rows()["shop", "GET /search"]["count"] == 1


def test_gzip_with_several_members(service):
    first = export_request([server_span("/a")]).SerializeToString()
    second = export_request([server_span("/a")]).SerializeToString()
    # Concatenated protobuf messages merge their repeated fields, so this is one request
    # with two resource spans; gzip allows a body of several members.
    body = gzip.compress(first) + gzip.compress(second)

    response = post(service, body, **{"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert service.rows()["shop", "GET /a"]["count"] == 2


def test_invalid_gzip_is_400(service):
    response = post(service, b"not gzip at all", **{"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert "not valid gzip" in protobuf_status(response).message


def test_truncated_gzip_is_400(service, server_spans):
    server_spans.add("/items/{item_id}")
    body = gzip.compress(server_spans.protobuf_body())[:-12]

    response = post(service, body, **{"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert "ends before its end marker" in protobuf_status(response).message


# --- Partial success -----------------------------------------------------------------------


def test_partial_success_keeps_valid_spans(service):
    start_ns = time.time_ns()
    end_before_start = server_span("/orders", start_ns=start_ns)
    end_before_start.end_time_unix_nano = start_ns - 1
    zero_trace_id = server_span("/orders")
    zero_trace_id.trace_id = bytes(16)
    short_span_id = server_span("/orders")
    short_span_id.span_id = b"\x01\x02"
    no_start_time = server_span("/orders")
    no_start_time.start_time_unix_nano = 0
    valid = [server_span("/orders"), server_span("/orders"), server_span("/items/{item_id}")]
    request = export_request(
        [end_before_start, zero_trace_id, short_span_id, no_start_time, *valid]
    )

    response = post(service, request.SerializeToString())

    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 4
    assert "end_time_unix_nano is before start_time_unix_nano" in partial.error_message
    assert "trace_id" in partial.error_message
    assert "span_id" in partial.error_message
    assert end_before_start.span_id.hex() in partial.error_message
    rows = service.rows()
    assert rows["shop", "GET /orders"]["count"] == 2
    assert rows["shop", "GET /items/{item_id}"]["count"] == 1


def test_partial_success_in_json(service, server_spans):
    server_spans.add("/items/{item_id}")
    document = json.loads(server_spans.json_body())
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    invalid = dict(spans[0], spanId="not-hex", traceId="zz" * 16)
    spans.append(invalid)

    response = post(service, json.dumps(document).encode(), JSON)

    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    partial = response.json()["partialSuccess"]
    # int64 fields are decimal strings in the protobuf JSON mapping.
    assert partial["rejectedSpans"] == "1"
    assert "trace_id" in partial["errorMessage"]
    assert service.rows()["shop", "GET /items/{item_id}"]["count"] == 1


def test_invalid_non_server_spans_are_not_rejected(service):
    internal = server_span("/orders")
    internal.kind = Span.SpanKind.SPAN_KIND_INTERNAL
    internal.trace_id = b""

    response = post(service, export_request([internal]).SerializeToString())

    assert response.status_code == 200
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")


# --- 400 -----------------------------------------------------------------------------------


def test_malformed_protobuf_is_400(service):
    response = post(service, b"\xff\xff\xff\xff definitely not protobuf")

    assert response.status_code == 400
    message = protobuf_status(response).message
    assert "not a protobuf ExportTraceServiceRequest" in message
    assert "application/x-protobuf" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "the request is a JSON array, expected an object"),
        (b'{"resourceSpans": {"oops": 1}}', "resourceSpans is a JSON object, expected an array"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "not-a-kind"}]}]}]}',
            "not an OTLP ExportTraceServiceRequest",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "not an OTLP ExportTraceServiceRequest",
        ),
    ],
)
def test_malformed_json_is_400(service, body, expected):
    response = post(service, body, JSON)

    assert response.status_code == 400
    assert response.headers["content-type"] == JSON
    status = response.json()
    assert expected in status["message"]
    assert status["code"] == 3


# --- 413 -----------------------------------------------------------------------------------


def test_body_over_limit_is_413(start_service, server_spans):
    service = start_service(ServiceSettings(max_body_bytes=1024))
    body = export_request([server_span(f"/route/{n}") for n in range(40)]).SerializeToString()
    assert len(body) > 1024

    response = post(service, body)

    assert response.status_code == 413
    message = protobuf_status(response).message
    assert "exceeds 1024 bytes" in message
    assert "VELOCITY_MAX_BODY_BYTES" in message
    assert service.table()["rows"] == []


def test_streamed_body_over_limit_is_413(start_service):
    service = start_service(ServiceSettings(max_body_bytes=1024))

    def chunks():
        for _ in range(8):
            yield b"\x00" * 512

    # A generator body is sent with chunked transfer encoding and no Content-Length.
    response = httpx.post(
        service.url("/v1/traces"), content=chunks(), headers={"Content-Type": PROTOBUF}
    )

    assert response.status_code == 413


def test_gzip_bomb_is_413(start_service):
    service = start_service(ServiceSettings(max_body_bytes=64 * 1024))
    bomb = gzip.compress(b"\x00" * (16 * 1024 * 1024))
    assert len(bomb) < 64 * 1024

    response = post(service, bomb, **{"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert "decompressed request body exceeds 65536 bytes" in protobuf_status(response).message


# --- 415 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", ""])
def test_unsupported_content_type_is_415(service, server_spans, content_type):
    server_spans.add("/items/{item_id}")

    response = post(service, server_spans.protobuf_body(), content_type)

    assert response.status_code == 415
    assert response.headers["content-type"] == JSON
    message = response.json()["message"]
    assert f"unsupported Content-Type {content_type!r}" in message
    assert "application/x-protobuf" in message
    assert service.table()["rows"] == []


def test_unsupported_content_encoding_is_415(service, server_spans):
    server_spans.add("/items/{item_id}")

    response = post(service, server_spans.protobuf_body(), **{"Content-Encoding": "br"})

    assert response.status_code == 415
    assert "unsupported Content-Encoding 'br'" in protobuf_status(response).message


# --- 500 -----------------------------------------------------------------------------------


class FailingRegistry(VelocityRegistry):
    def record(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")


def test_internal_fault_is_500_and_logged(server_spans, caplog):
    app = create_app(FailingRegistry(), ServiceSettings())
    server_spans.add("/items/{item_id}")

    with serve_app(app) as base_url:
        response = httpx.post(
            f"{base_url}/v1/traces",
            content=server_spans.protobuf_body(),
            headers={"Content-Type": PROTOBUF},
        )

    assert response.status_code == 500
    assert "see the service's log" in Status.FromString(response.content).message
    failures = [r for r in caplog.records if "export request 1 from 127.0.0.1" in r.getMessage()]
    assert failures
    assert failures[0].exc_info[1].args == ("disk on fire",)
