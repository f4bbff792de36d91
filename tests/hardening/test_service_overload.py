"""Overload: the service responds 429 or 503 with Retry-After instead of queueing without bound.

The OTLP specification (opentelemetry-proto docs/specification.md, "OTLP/HTTP Throttling" and
"Retryable Response Codes") lists 429, 502, 503 and 504 as the retryable codes; an overloaded
server should answer 429 or 503 and may add Retry-After in seconds. The OpenTelemetry Python
exporter installed here (opentelemetry-exporter-otlp-proto-http 1.45, its client in
opentelemetry/exporter/otlp/common/http.py) retries exactly those four codes, waits the
Retry-After seconds when the header is present, gives up when that wait is longer than what is
left of its timeout, and makes at most 6 attempts; it never retries 400 or 413.

Decoding workers are held busy with ``BlockingRegistry``, so the 429 and 503 cases are exact
rather than timing races. ``test_load_sheds_with_bounded_memory`` is the real load test: the
service in a subprocess, several threads sending large batches for a few seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_velocity_service import ServiceSettings, create_app
from otel_velocity_service.throttle import MAX_RETRY_AFTER_S, IngestLimiter
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    PROTOBUF,
    ManualClock,
    RunningService,
    manual_clock_fixture,
    pb,
    serve_app,
    service_process,
    start_service_fixture,
)

from otel_velocity import VelocityRegistry

RELEASE_TIMEOUT_S = 30.0


class BlockingRegistry(VelocityRegistry):
    """A registry whose ``record`` waits for ``release``, to keep decoding workers busy."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._blocked_threads: set[int] = set()

    def record(self, *args: Any, **kwargs: Any) -> None:
        if not self.release.is_set():
            with self._lock:
                self._blocked_threads.add(threading.get_ident())
            self.release.wait(RELEASE_TIMEOUT_S)
        super().record(*args, **kwargs)

    def wait_blocked(self, threads: int) -> None:
        """Wait until ``threads`` worker threads are blocked in ``record``."""
        deadline = time.monotonic() + 10
        while len(self._blocked_threads) < threads:
            assert time.monotonic() < deadline, f"{self._blocked_threads} blocked, want {threads}"
            time.sleep(0.01)


@contextmanager
def posted_in_background(
    service: RunningService, body: bytes, registry: BlockingRegistry
) -> Iterator[list[httpx.Response]]:
    """POST ``body`` from a thread; at the end of the block release ``registry`` and wait.

    The list holds the response once the block has ended.
    """
    responses: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: responses.append(service.post(body)))
    thread.start()
    try:
        yield responses
    finally:
        registry.release.set()
        thread.join(RELEASE_TIMEOUT_S)


def body_of_size(size: int, route: str = "/plug") -> bytes:
    """A one-span request of about ``size`` bytes: the padding is an attribute no one reads."""
    padding = pb.key_value("padding", pb.string_value("p" * size))
    body = pb.spans_request([pb.span(route=route, extra_attributes=[padding])])
    assert abs(len(body) - size) < 200
    return body


def retry_after(response: httpx.Response) -> int:
    header = response.headers.get("retry-after")
    assert header is not None, f"{response.status_code} without Retry-After"
    return int(header)


# --- IngestLimiter --------------------------------------------------------------------------------


def test_limiter_reserve_over_limit_fails() -> None:
    limiter = IngestLimiter(max_pending_bytes=100, max_wait_s=1)

    first = limiter.reserve(60)
    second = limiter.reserve(41)

    assert first is not None
    assert second is None
    assert limiter.pending_bytes == 60


def test_limiter_release_frees_bytes() -> None:
    limiter = IngestLimiter(max_pending_bytes=100, max_wait_s=1)
    reservation = limiter.reserve(60)
    assert reservation is not None

    reservation.release()

    assert limiter.pending_bytes == 0
    assert limiter.reserve(100) is not None


def test_limiter_grow_keeps_size_on_failure() -> None:
    limiter = IngestLimiter(max_pending_bytes=100, max_wait_s=1)
    reservation = limiter.reserve(0)
    assert reservation is not None

    assert reservation.grow_to(80)
    assert not reservation.grow_to(101)
    assert reservation.nbytes == 80
    assert limiter.pending_bytes == 80


def test_limiter_worker_wait_times_out() -> None:
    limiter = IngestLimiter(max_pending_bytes=100, max_wait_s=0.05, workers=1)

    async def acquire_twice() -> tuple[bool, bool]:
        return await limiter.acquire_worker(), await limiter.acquire_worker()

    assert anyio.run(acquire_twice) == (True, False)


def test_limiter_retry_after_from_rate() -> None:
    limiter = IngestLimiter(max_pending_bytes=10**9, max_wait_s=1, workers=2)
    assert limiter.retry_after_s() == 1

    async def decode_one() -> None:
        assert await limiter.acquire_worker()
        limiter.release_worker(decoded_bytes=1_000_000, decode_s=1.0)  # 1 MB/s per worker.

    anyio.run(decode_one)
    limiter.reserve(6_000_000)

    assert limiter.retry_after_s() == 3
    limiter.reserve(100_000_000)
    assert limiter.retry_after_s() == MAX_RETRY_AFTER_S


# --- 429 and 503 over HTTP ------------------------------------------------------------------------


def test_pending_bytes_full_is_429(start_service: Any, manual_clock: ManualClock) -> None:
    registry = BlockingRegistry(manual_clock)
    limit = 48 * 1024
    service = start_service(
        ServiceSettings(max_body_bytes=limit, max_pending_bytes=limit), registry=registry
    )
    plug = body_of_size(40 * 1024)
    second = body_of_size(10 * 1024, route="/second")

    with posted_in_background(service, plug, registry) as plug_responses:
        registry.wait_blocked(1)
        response = service.post(second)

    assert response.status_code == 429
    assert 1 <= retry_after(response) <= MAX_RETRY_AFTER_S
    assert "VELOCITY_MAX_PENDING_BYTES" in Status.FromString(response.content).message
    assert plug_responses[0].status_code == 200
    assert service.counts() == {("shop", "GET /plug"): 1}


def test_no_free_worker_is_503(start_service: Any, manual_clock: ManualClock) -> None:
    registry = BlockingRegistry(manual_clock)
    service = start_service(ServiceSettings(max_queue_wait_s=0.3), registry=registry)
    small = pb.spans_request([pb.span(route="/busy")])

    with (
        posted_in_background(service, small, registry) as first,
        posted_in_background(service, small, registry) as second,
    ):
        registry.wait_blocked(2)
        started_s = time.monotonic()
        response = service.post(pb.spans_request([pb.span(route="/late")]))
        waited_s = time.monotonic() - started_s

    assert response.status_code == 503
    assert 1 <= retry_after(response) <= MAX_RETRY_AFTER_S
    message = Status.FromString(response.content).message
    assert "no decoding worker was free within 0.3 s" in message
    assert waited_s >= 0.3
    assert first[0].status_code == 200
    assert second[0].status_code == 200
    assert service.counts() == {("shop", "GET /busy"): 2}


def test_overload_counted_in_totals(start_service: Any, manual_clock: ManualClock) -> None:
    registry = BlockingRegistry(manual_clock)
    service = start_service(ServiceSettings(max_queue_wait_s=0.1), registry=registry)
    small = pb.spans_request([pb.span()])

    with (
        posted_in_background(service, small, registry),
        posted_in_background(service, small, registry),
    ):
        registry.wait_blocked(2)
        statuses = [service.post(small).status_code for _ in range(3)]

    assert statuses == [503, 503, 503]
    assert service.app.state.ingest_totals.overloaded_requests == 3


# --- The SDK exporter -----------------------------------------------------------------------------


def sdk_server_spans(count: int, route: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.hardening")
    for _ in range(count):
        span = tracer.start_span(
            f"GET {route}",
            kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "http.route": route, "http.status_code": 200},
        )
        span.end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_exporter_retries_429_once_counted(start_service: Any, manual_clock: ManualClock) -> None:
    registry = BlockingRegistry(manual_clock)
    limit = 48 * 1024
    service = start_service(
        ServiceSettings(max_body_bytes=limit, max_pending_bytes=limit), registry=registry
    )
    spans = sdk_server_spans(40, "/exported")
    exporter = OTLPSpanExporter(endpoint=service.url("/v1/traces"), timeout=10)
    results: list[SpanExportResult] = []
    totals = service.app.state.ingest_totals

    with posted_in_background(service, body_of_size(46 * 1024), registry):
        registry.wait_blocked(1)
        started_s = time.monotonic()
        export = threading.Thread(target=lambda: results.append(exporter.export(spans)))
        export.start()
        deadline = time.monotonic() + 10
        while totals.overloaded_requests < 1:
            assert time.monotonic() < deadline, "the exporter's request never got 429"
            time.sleep(0.01)
        registry.release.set()
        export.join(RELEASE_TIMEOUT_S)
    elapsed_s = time.monotonic() - started_s
    exporter.shutdown()

    assert results == [SpanExportResult.SUCCESS]
    assert totals.overloaded_requests == 1
    # The first response had Retry-After: 1, and the exporter waited that long.
    assert elapsed_s >= 1.0
    assert service.counts() == {("shop", "GET /plug"): 1, ("shop", "GET /exported"): 40}


@dataclass
class RequestCounter:
    """ASGI middleware that counts POST /v1/traces requests."""

    app: Any
    posts: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/traces":
            self.posts += 1
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("settings", "expected_status"),
    [(ServiceSettings(max_body_bytes=256), 413), (ServiceSettings(token="t"), 401)],
    ids=["413", "401"],
)
def test_exporter_does_not_retry_permanent_errors(
    manual_clock: ManualClock, settings: ServiceSettings, expected_status: int
) -> None:
    counter = RequestCounter(create_app(VelocityRegistry(clock=manual_clock), settings))
    spans = sdk_server_spans(20, "/never")

    with serve_app(counter) as base_url:
        probe = httpx.post(
            base_url + "/v1/traces",
            content=pb.spans_request([pb.span()] * 5),
            headers={"Content-Type": PROTOBUF},
        )
        exporter = OTLPSpanExporter(endpoint=base_url + "/v1/traces", timeout=10)
        started_s = time.monotonic()
        result = exporter.export(spans)
        elapsed_s = time.monotonic() - started_s
        exporter.shutdown()

    assert probe.status_code == expected_status
    assert result is SpanExportResult.FAILURE
    assert counter.posts == 2  # The probe and one export attempt.
    assert elapsed_s < 1.0


# --- Load -----------------------------------------------------------------------------------------

LOAD_THREADS = 12
LOAD_SECONDS = 4.0
SPANS_PER_BATCH = 6000
LOAD_ROUTES = [f"/load/{n}/{{id}}" for n in range(8)]
# The service's peak resident memory may grow by this much under the load: the 4 MiB of pending
# bytes, two decoding workers each holding a 1 MiB body and its copy, connection buffers and
# the allocator's slack. Without the limiter the growth followed the number of clients.
MAX_RSS_GROWTH_KIB = 96 * 1024


def load_batch(seed: int) -> bytes:
    """About 1 MiB of SERVER spans over LOAD_ROUTES."""
    rng = random.Random(seed)
    spans = [
        pb.span(route=rng.choice(LOAD_ROUTES), duration_ns=rng.randrange(10**6, 10**8))
        for _ in range(SPANS_PER_BATCH)
    ]
    return pb.spans_request(spans)


@dataclass
class LoadReport:
    statuses: Counter[int]
    retry_after_missing: int
    accepted_spans: int
    requests: int
    elapsed_s: float


def send_load(base_url: str, batches: list[bytes]) -> LoadReport:
    """Send the batches back to back from LOAD_THREADS threads for LOAD_SECONDS."""
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    missing = 0
    accepted = 0
    stop_at = time.monotonic() + LOAD_SECONDS

    def client(number: int) -> None:
        nonlocal missing, accepted
        with httpx.Client(timeout=30) as http:
            sent = number
            while time.monotonic() < stop_at:
                body = batches[sent % len(batches)]
                sent += 1
                response = http.post(
                    base_url + "/v1/traces", content=body, headers={"Content-Type": PROTOBUF}
                )
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        accepted += SPANS_PER_BATCH
                    elif "retry-after" not in response.headers:
                        missing += 1

    started_s = time.monotonic()
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        for future in [pool.submit(client, number) for number in range(LOAD_THREADS)]:
            future.result()
    elapsed_s = time.monotonic() - started_s
    return LoadReport(statuses, missing, accepted, sum(statuses.values()), elapsed_s)


def test_load_sheds_with_bounded_memory() -> None:
    batches = [load_batch(seed) for seed in range(4)]
    env = {
        "VELOCITY_MAX_BODY_BYTES": str(2 * 1024 * 1024),
        "VELOCITY_MAX_PENDING_BYTES": str(4 * 1024 * 1024),
        "VELOCITY_MAX_QUEUE_WAIT_S": "1",
    }

    with service_process(env) as process:
        before_kib = process.memory_kib()["VmHWM"]
        report = send_load(process.base_url, batches)
        growth_kib = process.memory_kib()["VmHWM"] - before_kib
        table = httpx.get(process.base_url + "/ops/velocity", timeout=10).json()
        addresses = process.listening_addresses()

    counted = sum(row["count"] for row in table["rows"])
    shed = report.statuses[429] + report.statuses[503]
    print(  # Shown with pytest -s; docs/security.md quotes these figures.
        f"load: {report.requests} requests in {report.elapsed_s:.1f} s, statuses "
        f"{dict(report.statuses)}, {report.accepted_spans / report.elapsed_s:.0f} spans/s "
        f"accepted, peak RSS growth {growth_kib / 1024:.1f} MiB"
    )
    assert set(report.statuses) <= {200, 429, 503}, report.statuses
    assert shed > 0, report.statuses
    assert report.statuses[200] > 0, report.statuses
    assert report.retry_after_missing == 0
    assert counted == report.accepted_spans
    assert growth_kib < MAX_RSS_GROWTH_KIB, f"peak RSS grew by {growth_kib} KiB"
    assert addresses == [f"127.0.0.1:{process.port}"]
