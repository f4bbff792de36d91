"""Fuzzing of the OTLP decode and count step, in process and over HTTP, with hypothesis.

In process, ``ingest_body`` (what ``POST /v1/traces`` runs on a worker thread) gets 10,000
bodies: random bytes, random OTLP/JSON, requests built from random protobuf messages, and those
requests with random byte edits. It may only return a result or raise ``MalformedRequest`` or
``DecodeLimitExceeded``. Whenever protobuf's own parser accepts a body, the span-by-span decoder
``ingest_wire`` must count exactly what ``ingest`` counts on the parsed message, span kind by
span kind and row by row. ``ingest_body`` relies on that when it picks one of the two. Over
HTTP a smaller number of such bodies must never get a 5xx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from otel_velocity_service.otlp import (
    DecodeLimitExceeded,
    Encoding,
    IngestResult,
    MalformedRequest,
    ingest,
    ingest_body,
    ingest_wire,
)
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    JSON,
    PROTOBUF,
    RunningService,
    manual_clock_fixture,
    service_fixture,
    start_service_fixture,
)

from otel_velocity import VelocityRegistry

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz_settings(max_examples: int) -> settings:
    return settings(FUZZ_SETTINGS, max_examples=max_examples)


# --- Strategies -----------------------------------------------------------------------------------

ATTRIBUTE_KEYS = st.sampled_from(
    [
        "http.route",
        "http.method",
        "http.request.method",
        "http.status_code",
        "http.response.status_code",
        "http.target",
        "url.full",
        "service.name",
        "",
    ]
)
TEXTS = st.one_of(
    st.sampled_from(["GET", "post", "PATCH", "BREW", "/items/{id}", "/", "200", "503", " "]),
    st.text(max_size=24),
)
INTEGERS = st.one_of(
    st.sampled_from([0, 99, 100, 200, 404, 500, 503, 999, 1000, -1]),
    st.integers(-(2**63), 2**63 - 1),
)
ANY_VALUES = st.one_of(
    st.builds(lambda text: AnyValue(string_value=text), TEXTS),
    st.builds(lambda number: AnyValue(int_value=number), INTEGERS),
    st.builds(lambda flag: AnyValue(bool_value=flag), st.booleans()),
    st.builds(lambda number: AnyValue(double_value=number), st.floats()),
    st.builds(lambda raw: AnyValue(bytes_value=raw), st.binary(max_size=8)),
    st.builds(lambda index: AnyValue(string_value_strindex=index), st.integers(0, 600)),
    st.builds(lambda: AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="GET")]))),
    st.just(AnyValue()),
)
KEY_VALUES = st.builds(
    lambda key, value: KeyValue(key=key, value=value), ATTRIBUTE_KEYS, ANY_VALUES
)
IDS_16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
IDS_8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=12))
TIMES = st.one_of(
    st.sampled_from([0, 1, 1_700_000_000_000_000_000, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
DURATIONS = st.one_of(
    st.integers(-(10**9), 10**10), st.sampled_from([24 * 3600 * 10**9, 24 * 3600 * 10**9 + 1])
)


@st.composite
def spans(draw: Callable[..., Any]) -> Span:
    start_ns = draw(TIMES)
    end_ns = min(max(start_ns + draw(DURATIONS), 0), 2**64 - 1)
    kind = draw(st.one_of(st.sampled_from([2, 2, 2, 1, 3, 0]), st.integers(-(2**31), 2**31 - 1)))
    span = Span(
        trace_id=draw(IDS_16),
        span_id=draw(IDS_8),
        name=draw(TEXTS),
        kind=kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        attributes=draw(st.lists(KEY_VALUES, max_size=5)),
    )
    status = draw(
        st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 2]))
    )
    if status is not None:
        span.status.CopyFrom(Status(code=status))
    return span


@st.composite
def requests(draw: Callable[..., Any]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource = Resource(attributes=draw(st.lists(KEY_VALUES, max_size=2)))
        if draw(st.booleans()):
            resource.attributes.append(
                KeyValue(key="service.name", value=AnyValue(string_value=draw(TEXTS)))
            )
        scopes = [
            ScopeSpans(spans=draw(st.lists(spans(), max_size=4)))
            for _ in range(draw(st.integers(1, 2)))
        ]
        request.resource_spans.append(ResourceSpans(resource=resource, scope_spans=scopes))
    return request


@st.composite
def edited_bodies(draw: Callable[..., Any]) -> bytes:
    """A serialized request with one or two random byte edits: flip, insert, delete, repeat."""
    body = bytearray(draw(requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 2))):
        position = draw(st.integers(0, len(body)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "repeat"]))
        if edit == "flip" and position < len(body):
            body[position] = draw(st.integers(0, 255))
        elif edit == "insert":
            body[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete":
            del body[position : position + draw(st.integers(1, 8))]
        else:
            body[position:position] = body[position : position + draw(st.integers(1, 16))]
    return bytes(body)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXTS),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "resource",
                    "attributes",
                    "traceId",
                    "spanId",
                    "kind",
                    "startTimeUnixNano",
                    "endTimeUnixNano",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "status",
                    "code",
                ]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=20,
)

# --- In process -----------------------------------------------------------------------------------


def decode(body: bytes, encoding: Encoding) -> tuple[IngestResult | None, VelocityRegistry]:
    """Run ``ingest_body``; return None for the result when it raised one of its two errors."""
    registry = VelocityRegistry(clock=lambda: 1_700_000_000.0)
    try:
        return ingest_body(body, encoding, registry), registry
    except (MalformedRequest, DecodeLimitExceeded):
        assert registry.rows() == [], "a body that raised was partly counted"
        return None, registry


def rows(registry: VelocityRegistry) -> list[tuple[str, str, int, int]]:
    return sorted(
        (stats.service, str(stats.key), stats.window.count, stats.window.errors)
        for stats in registry.rows()
    )


def assert_same_as_protobuf_parser(body: bytes) -> bool:
    """Compare ``ingest_wire`` with ``ingest`` on protobuf's parse of the same body.

    Return False when protobuf rejects the body.
    """
    try:
        parsed = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        return False
    expected_registry = VelocityRegistry(clock=lambda: 1_700_000_000.0)
    expected = ingest(parsed, expected_registry)

    registry = VelocityRegistry(clock=lambda: 1_700_000_000.0)
    result = ingest_wire(body, registry)

    assert result.server_spans == expected.server_spans
    assert result.other_spans == expected.other_spans
    assert result.rejected == expected.rejected
    assert rows(registry) == rows(expected_registry)
    return True


def run_timed(name: str, test: Callable[[], None], cases: Callable[[], int]) -> None:
    """Run a hypothesis test and print its case count and time, shown with ``pytest -s``."""
    started_s = time.perf_counter()
    test()
    print(f"{name}: {cases()} cases in {time.perf_counter() - started_s:.1f} s")


def test_fuzz_random_bytes() -> None:
    cases = 0

    @fuzz_settings(4000)
    @given(st.binary(max_size=512))
    def check(body: bytes) -> None:
        nonlocal cases
        cases += 1
        decode(body, Encoding.PROTOBUF)
        assert_same_as_protobuf_parser(body)

    run_timed("random bytes", check, lambda: cases)
    assert cases >= 4000


def test_fuzz_random_json() -> None:
    cases = 0

    @fuzz_settings(1000)
    @given(st.one_of(JSON_VALUES.map(lambda value: json.dumps(value).encode()), st.binary()))
    def check(body: bytes) -> None:
        nonlocal cases
        cases += 1
        decode(body, Encoding.JSON)

    run_timed("random JSON", check, lambda: cases)
    assert cases >= 1000


def test_fuzz_requests_match_protobuf() -> None:
    cases = 0

    @fuzz_settings(2500)
    @given(requests())
    def check(request: ExportTraceServiceRequest) -> None:
        nonlocal cases
        cases += 1
        assert assert_same_as_protobuf_parser(request.SerializeToString())

    run_timed("random requests", check, lambda: cases)
    assert cases >= 2500


def test_fuzz_edited_requests() -> None:
    cases = 0
    compared = 0

    @fuzz_settings(2500)
    @given(edited_bodies())
    def check(body: bytes) -> None:
        nonlocal cases, compared
        cases += 1
        decode(body, Encoding.PROTOBUF)
        compared += assert_same_as_protobuf_parser(body)

    run_timed("edited requests", check, lambda: cases)
    assert cases >= 2500
    # Some edits still parse, so the comparison also covers odd encodings.
    assert compared >= 250


# --- Over HTTP ------------------------------------------------------------------------------------


def test_fuzz_over_http(service: RunningService) -> None:
    statuses: set[int] = set()

    @fuzz_settings(150)
    @given(
        st.one_of(
            st.binary(max_size=512).map(lambda body: (body, PROTOBUF)),
            edited_bodies().map(lambda body: (body, PROTOBUF)),
            requests().map(lambda request: (request.SerializeToString(), PROTOBUF)),
            JSON_VALUES.map(lambda value: (json.dumps(value).encode(), JSON)),
        )
    )
    def check(case: tuple[bytes, str]) -> None:
        body, content_type = case
        response = service.post(body, content_type)
        statuses.add(response.status_code)
        assert response.status_code in (200, 400, 413), response.text
        assert response.headers["content-type"] == content_type

    check()

    assert 200 in statuses
    assert 400 in statuses
    health = httpx.get(service.url("/healthz"), timeout=5)
    assert health.status_code == 200


@pytest.mark.parametrize("encoding", list(Encoding))
def test_empty_body_decodes_empty(encoding: Encoding) -> None:
    result, _ = decode(b"", encoding)

    assert result == IngestResult()
