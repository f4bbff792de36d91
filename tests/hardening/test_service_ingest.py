"""Hostile input at ``POST /v1/traces``: every body gets a 4xx with a message or a partial success.

Each test sends real HTTP to the service under uvicorn and reads the counts back from
``GET /ops/velocity``, so a span that is wrongly counted, or wrongly dropped, fails the count.
Bodies that protobuf's serializer cannot make (invalid UTF-8, odd layouts) are built byte by byte
with ``pb``. ``test_protobuf_bomb_memory_bounded`` runs the service in a subprocess to read its
peak resident memory.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otel_velocity_service import ServiceSettings
from otel_velocity_service.otlp import Encoding, MalformedRequest, ingest_body
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    JSON,
    PROTOBUF,
    RunningService,
    manual_clock_fixture,
    pb,
    recorded_logs,
    service_fixture,
    service_process,
    start_service_fixture,
)

from otel_velocity import VelocityRegistry

VALID_SPANS = 3
ITEMS_KEY = ("shop", "GET /items/{item_id}")


def status_message(response: httpx.Response) -> str:
    """Return the google.rpc.Status message of a 4xx or 5xx response, in either encoding."""
    if response.headers["content-type"] == JSON:
        message: str = response.json()["message"]
        return message
    return str(Status.FromString(response.content).message)


def partial_success(response: httpx.Response) -> tuple[int, str]:
    """Return (rejected_spans, error_message) of a protobuf export response."""
    assert response.status_code == 200, status_message(response)
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    return partial.rejected_spans, partial.error_message


def with_valid_spans(*spans: bytes) -> bytes:
    """A request with ``spans`` between valid SERVER spans of GET /items/{item_id}."""
    return pb.spans_request([pb.span(), *spans, pb.span(), pb.span()])


# --- Bodies that are not OTLP ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_is_400(service: RunningService, seed: int) -> None:
    body = os.urandom(64 + seed * 97)

    response = service.post(body)

    assert response.status_code == 400, response.status_code
    assert "not a protobuf ExportTraceServiceRequest" in status_message(response)
    assert service.counts() == {}


def test_truncated_protobuf_is_400(service: RunningService) -> None:
    body = with_valid_spans(pb.span())

    for cut in (1, len(body) // 3, len(body) // 2, len(body) - 1):
        response = service.post(body[:cut])

        assert response.status_code == 400, (cut, response.status_code)
        assert "runs past" in status_message(response)
    assert service.counts() == {}


def test_truncated_protobuf_counts_nothing() -> None:
    """Every prefix of a request either decodes whole resources or raises, counting nothing."""
    resources = [pb.resource_spans([pb.span()], service=f"svc{n}") for n in range(3)]
    body = pb.request(*resources)
    boundaries = {0}
    for resource in resources:
        boundaries.add(max(boundaries) + len(pb.field(1, resource)))

    for cut in range(len(body) + 1):
        registry = VelocityRegistry()
        try:
            result = ingest_body(body[:cut], Encoding.PROTOBUF, registry)
        except MalformedRequest:
            assert cut not in boundaries, cut
            assert registry.rows() == [], cut
            continue
        assert cut in boundaries, cut
        assert result.server_spans == sorted(boundaries).index(cut), cut


def test_json_body_as_protobuf_is_400(service: RunningService) -> None:
    body = json.dumps({"resourceSpans": []}).encode()

    response = service.post(body, PROTOBUF)

    assert response.status_code == 400
    assert "application/x-protobuf" in status_message(response)


def test_protobuf_body_as_json_is_400(service: RunningService) -> None:
    response = service.post(with_valid_spans(), JSON)

    assert response.status_code == 400
    assert "not valid JSON" in status_message(response)
    assert service.counts() == {}


def test_nested_gzip_is_400(service: RunningService) -> None:
    body = gzip.compress(gzip.compress(with_valid_spans()))

    response = service.post(body, **{"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert service.counts() == {}


def test_gzip_bomb_of_members_is_413(start_service: Any) -> None:
    service = start_service(ServiceSettings(max_body_bytes=256 * 1024))
    member = gzip.compress(b"\x00" * (128 * 1024))
    bomb = member * 8

    response = service.post(bomb, **{"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert "decompressed request body exceeds 262144 bytes" in status_message(response)


# --- Empty requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "encoding"),
    [
        (b"", JSON, None),
        (b"  \n", JSON, None),
        (gzip.compress(b""), PROTOBUF, "gzip"),
        (gzip.compress(b""), JSON, "gzip"),
    ],
    ids=["json", "json-whitespace", "gzip-protobuf", "gzip-json"],
)
def test_empty_body_is_success(
    service: RunningService, body: bytes, content_type: str, encoding: str | None
) -> None:
    # OTLP (opentelemetry-proto docs/specification.md, "Full Success"): "If the server receives
    # an empty request (a request that does not carry any telemetry data) the server SHOULD
    # respond with success."
    headers = {"Content-Encoding": encoding} if encoding else {}

    response = service.post(body, content_type, **headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type


# --- Absurd values in valid protobuf --------------------------------------------------------------

# Each case: one span, and the reason in the partial success message when it is rejected.
REJECTED_SPANS = {
    "end-before-start": (pb.span(duration_ns=-1), "end_time_unix_nano is before"),
    "huge-negative-duration": (
        pb.span(start_ns=2**63, end_ns=1),
        "end_time_unix_nano is before",
    ),
    "duration-over-a-day": (pb.span(duration_ns=25 * 3600 * 10**9), "over 24 hours"),
    "duration-of-centuries": (pb.span(start_ns=1, end_ns=2**64 - 1), "over 24 hours"),
    "no-start-time": (pb.span(start_ns=0, end_ns=5), "is 0"),
    "short-trace-id": (pb.span(trace_id=os.urandom(15)), "trace_id is not 16 bytes"),
    "long-trace-id": (pb.span(trace_id=os.urandom(17)), "trace_id is not 16 bytes"),
    "empty-trace-id": (pb.span(trace_id=b""), "trace_id is not 16 bytes"),
    "zero-trace-id": (pb.span(trace_id=bytes(16)), "trace_id is not 16 bytes"),
    "short-span-id": (pb.span(span_id=os.urandom(7)), "span_id is not 8 bytes"),
    "long-span-id": (pb.span(span_id=os.urandom(9)), "span_id is not 8 bytes"),
    "route-not-utf8": (pb.span(route=b"/items/\xff\xfe"), "not valid UTF-8"),
    "method-not-utf8": (
        pb.span(extra_attributes=[pb.key_value("http.request.method", pb.string_value(b"\xc3"))]),
        "not valid UTF-8",
    ),
    "truncated-attribute": (
        pb.span(extra_attributes=[pb.key_value("http.route", b"\x0a\x09/cut")]),
        "not valid protobuf",
    ),
    "truncated-span": (pb.span() + b"\x4a\x05\x0a", "not a valid protobuf Span"),
}


@pytest.mark.parametrize("case", REJECTED_SPANS, ids=list(REJECTED_SPANS))
def test_absurd_span_rejected_others_kept(service: RunningService, case: str) -> None:
    span, reason = REJECTED_SPANS[case]

    response = service.post(with_valid_spans(span))

    rejected, message = partial_success(response)
    assert rejected == 1
    assert reason in message
    assert service.counts() == {ITEMS_KEY: VALID_SPANS}


# Each case: one span that is counted, and the (service, key) of the row it lands in.
COUNTED_SPANS = {
    "no-attributes": (
        pb.span(route=None, status=None, method=None),
        ("shop", "_OTHER (unmatched)"),
    ),
    "route-is-int": (
        pb.span(route=None, extra_attributes=[pb.key_value("http.route", pb.int_value(7))]),
        ("shop", "GET (unmatched)"),
    ),
    "route-without-value": (
        pb.span(route=None, extra_attributes=[pb.key_value("http.route", None)]),
        ("shop", "GET (unmatched)"),
    ),
    "method-is-bool": (
        pb.span(
            route="/b",
            extra_attributes=[pb.key_value("http.request.method", pb.varint_field(2, 1))],
        ),
        ("shop", "_OTHER /b"),
    ),
    "status-is-string": (
        pb.span(
            route="/s",
            status=None,
            extra_attributes=[pb.key_value("http.status_code", pb.string_value("503"))],
        ),
        ("shop", "GET /s"),
    ),
    "route-is-array": (
        pb.span(route=None, extra_attributes=[pb.key_value("http.route", pb.field(5, b""))]),
        ("shop", "GET (unmatched)"),
    ),
    "route-with-control-characters": (
        pb.span(route="/a\n\tb\x00"),
        ("shop", "GET /a  b"),
    ),
    "name-not-utf8": (pb.span(route="/n", name=b"\xff\xff"), ("shop", "GET /n")),
    "other-attribute-not-utf8": (
        pb.span(route="/o", extra_attributes=[pb.key_value(b"k\xff", pb.string_value(b"\xfe"))]),
        ("shop", "GET /o"),
    ),
    "megabyte-route": (pb.span(route="/" + "r" * 1_000_000), ("shop", "GET /" + "r" * 199)),
    "megabyte-other-attribute": (
        pb.span(route="/m", extra_attributes=[pb.key_value("db", pb.string_value("x" * 10**6))]),
        ("shop", "GET /m"),
    ),
    "ten-thousand-attributes": (
        pb.span(
            route="/many",
            extra_attributes=[
                pb.key_value(f"attr.{n}", pb.string_value(str(n))) for n in range(10_000)
            ],
        ),
        ("shop", "GET /many"),
    ),
    "route-repeated-last-wins": (
        pb.span(
            route="/first", extra_attributes=[pb.key_value("http.route", pb.string_value("/last"))]
        ),
        ("shop", "GET /last"),
    ),
    "unknown-fields-and-group": (
        pb.span(route="/u", extra_fields=pb.varint_field(99, 1) + b"\xa3\x06\x08\x01\xa4\x06"),
        ("shop", "GET /u"),
    ),
}


@pytest.mark.parametrize("case", COUNTED_SPANS, ids=list(COUNTED_SPANS))
def test_odd_span_counted_in_row(service: RunningService, case: str) -> None:
    span, key = COUNTED_SPANS[case]

    response = service.post(with_valid_spans(span))

    assert response.status_code == 200, status_message(response)
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    expected = {ITEMS_KEY: VALID_SPANS, key: 1}
    assert service.counts() == expected


def test_service_name_not_utf8_rejects_its_spans(service: RunningService) -> None:
    body = pb.request(
        pb.resource_spans([pb.span(), pb.span()], service=b"sh\xffop"),
        pb.resource_spans([pb.span()], service="billing"),
    )

    rejected, message = partial_success(service.post(body))

    assert rejected == 2
    assert "service.name is not valid UTF-8" in message
    assert service.counts() == {("billing", "GET /items/{item_id}"): 1}


def test_service_name_missing_is_unknown(service: RunningService) -> None:
    response = service.post(pb.spans_request([pb.span()], service=None))

    assert response.status_code == 200
    assert service.counts() == {("unknown_service", "GET /items/{item_id}"): 1}


def test_many_rejections_counted_exactly(service: RunningService) -> None:
    bad = [pb.span(trace_id=b"")] * 500 + [pb.span(route=b"\xff")] * 250
    body = pb.spans_request([*bad, *[pb.span() for _ in range(100)]])

    rejected, message = partial_success(service.post(body))

    assert rejected == 750
    assert "500 with trace_id" in message
    assert "250 with an http.route" in message
    assert service.counts() == {ITEMS_KEY: 100}


# --- Limits ---------------------------------------------------------------------------------------


def test_json_too_costly_to_decode_is_413(service: RunningService) -> None:
    # 3 MiB of empty objects: json.loads would make a million dicts (about 60 MiB).
    body = b'{"resourceSpans": [' + b"{}," * (1024 * 1024) + b"{}]}"

    response = service.post(body, JSON)

    assert response.status_code == 413
    message = status_message(response)
    assert "more than the service's limit of 64 MiB" in message
    assert "application/x-protobuf" in message


def test_too_many_fields_is_413(service: RunningService) -> None:
    # 2 MiB of empty ResourceSpans fields, ten times the field limit for that size.
    body = b"\x0a\x00" * (1024 * 1024)

    response = service.post(body)

    assert response.status_code == 413
    assert "protobuf fields" in status_message(response)


def test_span_field_limit_rejects_rest(service: RunningService) -> None:
    # One span with 400,000 empty attributes (800 KB) uses up the field limit of the request,
    # 100,000 plus one per 8 bytes.
    heavy = pb.span(route="/heavy", extra_fields=b"\x4a\x00" * 400_000)
    body = pb.spans_request([pb.span(), heavy, pb.span(), pb.span()])

    rejected, message = partial_success(service.post(body))

    assert rejected == 3
    assert "more protobuf fields in the request than its limit" in message
    assert service.counts() == {ITEMS_KEY: 1}


def empty_spans_body(size: int) -> bytes:
    """A request of ``size`` bytes: one scope of empty two-byte spans."""
    body = pb.request(pb.field(2, b"\x12\x00" * (size // 2 - 8)))
    assert size - 16 <= len(body) <= size
    return body


def test_protobuf_bomb_memory_bounded() -> None:
    """Bodies of empty spans leave the service's peak memory within the documented bounds.

    protobuf's parser needs 91 times the size of such a body: 360 MiB for 4 MiB, which is
    4 KiB gzipped. The service reads bodies over 512 KiB span by span, in the memory of the
    body, and lets protobuf's parser take at most 512 KiB (about 45 MiB).
    """
    large = gzip.compress(empty_spans_body(4 * 1024 * 1024))
    small = gzip.compress(empty_spans_body(512 * 1024))
    assert len(large) < 8 * 1024

    with service_process({"VELOCITY_MAX_BODY_BYTES": str(8 * 1024 * 1024)}) as process:
        start_kib = process.memory_kib()["VmHWM"]
        large_response = post_gzip(process.base_url, large)
        large_growth_kib = process.memory_kib()["VmHWM"] - start_kib
        small_response = post_gzip(process.base_url, small)
        small_growth_kib = process.memory_kib()["VmHWM"] - start_kib

    assert large_response.status_code in (200, 413), large_response.status_code
    assert large_growth_kib < 40 * 1024, f"peak memory grew by {large_growth_kib} KiB"
    assert small_response.status_code == 200, small_response.status_code
    assert small_growth_kib < 80 * 1024, f"peak memory grew by {small_growth_kib} KiB"


def post_gzip(base_url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        base_url + "/v1/traces",
        content=body,
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        timeout=60,
    )


# --- Connections that misbehave -------------------------------------------------------------------


def test_client_disconnect_mid_body_not_an_error(service: RunningService) -> None:
    host, port = service.base_url.removeprefix("http://").split(":")

    with recorded_logs("otel_velocity_service") as logs:
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n"
                + b"\x0a"
                * 100
            )
        deadline = time.monotonic() + 10
        while not any("disconnected" in message for message in logs.messages()):
            assert time.monotonic() < deadline, f"no disconnect log line in {logs.messages()}"
            time.sleep(0.02)
        response = service.post(with_valid_spans())

    errors = [record for record in logs.records if record.levelname in ("ERROR", "CRITICAL")]
    assert errors == []
    assert response.status_code == 200
    assert service.counts() == {ITEMS_KEY: VALID_SPANS}


def test_slow_body_is_408(start_service: Any) -> None:
    service = start_service(ServiceSettings(body_timeout_s=0.5))
    host, port = service.base_url.removeprefix("http://").split(":")

    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n\x0a"
        )
        reply = connection.recv(65536)

    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert b"did not arrive within 0.5 s" in reply


@pytest.mark.parametrize(
    "body",
    [
        '{"resourceSpans":' + "[" * 5000 + "]" * 5000 + "}",
        '{"a":' * 100_000 + "1" + "}" * 100_000,
    ],
    ids=["arrays", "objects"],
)
def test_deeply_nested_json_is_400(body: str) -> None:
    registry = VelocityRegistry()

    with pytest.raises(MalformedRequest, match="nested too deeply"):
        ingest_body(body.encode(), Encoding.JSON, registry, lambda service: frozenset())

    assert registry.rows() == []
