"""End-to-end across processes: gunicorn workers -> real Collector -> velocity service and Sentry.

The app (tests/apps/fleet_app.py) runs as ``opentelemetry-instrument gunicorn -w 4 -k
uvicorn.workers.UvicornWorker``. ``opentelemetry-instrument`` sets up the SDK, the batch span
processor's thread, otel-velocity and its sentry-sdk client in the gunicorn master, and
gunicorn then forks the workers, so everything the workers use was started before the fork.

The batch span processor exports when ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` spans are queued, and
its timer (``OTEL_BSP_SCHEDULE_DELAY``) is longer than the test. That makes delivery exact:
before SIGTERM each worker has exported ``served // BATCH_SIZE * BATCH_SIZE`` spans, which
shows that its batch thread runs after the fork, and the rest reach the Collector only through
the SIGTERM flush.

The flush needs gunicorn's ``post_worker_init`` hook to call ``otel_velocity.install()``. Each
worker resets SIGTERM to its default action after the fork, and ``UvicornWorker`` exits by
raising SIGTERM again, which skips ``atexit``, so without the hook every worker drops the
spans still queued when it stops.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gunicorn.config
import httpx
import pytest

from tests.apps.fleet_app import WORKER_PID_ATTRIBUTE, WORKER_PID_HEADER
from tests.collector.conftest import (
    PROCESS_START_TIMEOUT_SECONDS,
    VENV_BIN,
    CollectorProcess,
    ServerProcess,
    VelocityService,
    instrumented_app_env,
    wait_until,
)
from tests.support.sentry_ingest import OtlpSpan, SentryIngest

SERVICE_NAME = "fleet"
WORKERS = 4
CYCLES = 20
BATCH_SIZE = 10
# Longer than the test, so the batch span processor's timer never fires during it.
SCHEDULE_DELAY_MS = 600_000
CLIENT_THREADS = 8
REQUEST_TIMEOUT_S = 10.0
# Seconds for spans to pass through the Collector (batch timeout 100 ms in collector_env).
DELIVERY_TIMEOUT_S = 20.0

GUNICORN_CONFIG = """\
import otel_velocity


def post_worker_init(worker):
    # The worker has reset SIGTERM to its default action: arm otel-velocity's flush again.
    otel_velocity.install()
"""


@dataclass(frozen=True)
class RequestCase:
    """One kind of request: what to send, the expected status and where it is counted."""

    method: str
    path: str
    """Path with ``{n}``, a number unique to each request."""
    status: int
    key: str
    """Row key in the velocity table."""
    span_name: str
    per_cycle: int


CASES = (
    RequestCase("GET", "/items/{n}", 200, "GET /items/{item_id}", "GET /items/{item_id}", 6),
    RequestCase("GET", "/items/9{n:03d}", 404, "GET /items/{item_id}", "GET /items/{item_id}", 2),
    RequestCase(
        "GET",
        "/users/{n}/orders",
        200,
        "GET /users/{user_id}/orders",
        "GET /users/{user_id}/orders",
        5,
    ),
    RequestCase(
        "POST",
        "/cart/{n}/checkout",
        200,
        "POST /cart/{cart_id}/checkout",
        "POST /cart/{cart_id}/checkout",
        3,
    ),
    RequestCase(
        "GET",
        "/unavailable/region-{n}",
        503,
        "GET /unavailable/{region}",
        "GET /unavailable/{region}",
        2,
    ),
    RequestCase("GET", "/no-such-page/{n}", 404, "GET (unmatched)", "GET", 2),
)
REQUEST_COUNT = CYCLES * sum(case.per_cycle for case in CASES)


@dataclass(frozen=True)
class Served:
    """One response of the app, with the pid of the worker that sent it."""

    case: RequestCase
    status: int
    pid: int


def request_plan() -> list[tuple[RequestCase, str]]:
    """Return every request to send, the cases interleaved, each with its own path."""
    numbers = itertools.count()
    plan = []
    for _ in range(CYCLES):
        for case in CASES:
            for _ in range(case.per_cycle):
                plan.append((case, case.path.format(n=next(numbers))))
    return plan


def send_requests(app_url: str) -> list[Served]:
    """Send the plan from several threads, each request on a new connection."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=app_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        def send(item: tuple[RequestCase, str]) -> Served:
            case, path = item
            response = client.request(case.method, path)
            return Served(case, response.status_code, int(response.headers[WORKER_PID_HEADER]))

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            return list(pool.map(send, request_plan()))


def read_worker_registries(app_url: str, worker_count: int) -> dict[int, dict[str, Any]]:
    """Call ``GET /_test/worker`` on new connections until ``worker_count`` workers responded.

    Returns the latest response body of each worker by pid. The tests exclude ``/_test/`` from
    tracing, so the calls do not change the rows they read.
    """
    bodies: dict[int, dict[str, Any]] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=app_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        def all_responded() -> bool:
            body = client.get("/_test/worker").json()
            bodies[body["pid"]] = body
            return len(bodies) >= worker_count

        wait_until(
            all_responded,
            PROCESS_START_TIMEOUT_SECONDS,
            lambda: (
                f"{worker_count} workers respond to GET /_test/worker (responded: {sorted(bodies)})"
            ),
        )
    return bodies


def fleet_server_spans(ingest: SentryIngest) -> list[OtlpSpan]:
    return [
        span
        for span in ingest.otlp_spans()
        if span.kind == "SPAN_KIND_SERVER"
        and span.resource_attributes.get("service.name") == SERVICE_NAME
    ]


def spans_per_pid(ingest: SentryIngest) -> Counter[int]:
    return Counter(span.attributes.get(WORKER_PID_ATTRIBUTE) for span in fleet_server_spans(ingest))


def start_gunicorn_fleet(
    start_server: Callable[..., ServerProcess],
    env: dict[str, str],
    config_path: Path,
) -> ServerProcess:
    config_path.write_text(GUNICORN_CONFIG)
    command = [
        str(VENV_BIN / "opentelemetry-instrument"),
        str(VENV_BIN / "gunicorn"),
        "--workers",
        str(WORKERS),
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--bind",
        "127.0.0.1:{port}",
        # "-c": opentelemetry-instrument rejects "--config" as an ambiguous abbreviation of
        # its own --configurator and --config_file options.
        "-c",
        str(config_path),
        "--graceful-timeout",
        "10",
    ]
    # gunicorn 27 opens a control socket under ~/.gunicorn unless --no-control-socket is given.
    if "control_socket_disable" in gunicorn.config.Config().settings:
        command.append("--no-control-socket")
    command.append("tests.apps.fleet_app:app")
    return start_server("gunicorn-fleet", command, env)


@pytest.fixture
def fleet_env(
    collector_env: dict[str, str],
    sentry_ingest: SentryIngest,
    start_velocity_service: Callable[..., VelocityService],
) -> tuple[dict[str, str], VelocityService]:
    service = start_velocity_service()
    collector_env["VELOCITY_OTLP_ENDPOINT"] = service.url
    collector_env["SENTRY_OTLP_TRACES_ENDPOINT"] = sentry_ingest.otlp_traces_url
    collector_env["SENTRY_PUBLIC_KEY"] = sentry_ingest.public_key
    return collector_env, service


def test_gunicorn_fleet_delivers_every_span(
    fleet_env: tuple[dict[str, str], VelocityService],
    start_collector: Callable[[dict[str, str]], CollectorProcess],
    start_server: Callable[..., ServerProcess],
    clean_environment: dict[str, str],
    sentry_ingest: SentryIngest,
    tmp_path: Path,
) -> None:
    collector_env, service = fleet_env
    collector = start_collector(collector_env)
    app_env = instrumented_app_env(clean_environment, collector, SERVICE_NAME)
    app_env.update(
        OTEL_BSP_SCHEDULE_DELAY=str(SCHEDULE_DELAY_MS),
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE=str(BATCH_SIZE),
        # The Sentry correlation starts sentry-sdk in the master too. Its own OTLP exporter is
        # off, because the Collector already sends the spans to the ingest.
        SENTRY_DSN=sentry_ingest.dsn,
        VELOCITY_SENTRY_OTLP="false",
    )
    app = start_gunicorn_fleet(start_server, app_env, tmp_path / "gunicorn.conf.py")
    app.wait_until_ready("/_test/worker", PROCESS_START_TIMEOUT_SECONDS)
    booted_pids = set(read_worker_registries(app.url, WORKERS))

    # Load: every request on a new connection, so the workers share them.
    served = send_requests(app.url)
    wrong_status = [item for item in served if item.status != item.case.status]
    assert wrong_status == []
    served_per_pid = Counter(item.pid for item in served)
    assert len(served_per_pid) >= 2
    assert set(served_per_pid) == booted_pids

    # Each worker's in-process registry counted exactly the requests that worker served.
    registries = read_worker_registries(app.url, WORKERS)
    for pid, body in registries.items():
        expected_counts = Counter(item.case.key for item in served if item.pid == pid)
        expected_errors = Counter(
            item.case.key for item in served if item.pid == pid and item.status >= 500
        )
        counts = {row["key"]: row["count"] for row in body["rows"]}
        errors = {row["key"]: row["errors"] for row in body["rows"] if row["errors"]}
        assert body["installed"], f"worker {pid}"
        assert counts == dict(expected_counts), f"worker {pid}"
        assert errors == dict(expected_errors), f"worker {pid}"

    # Before SIGTERM: each worker's batch thread, started again after the fork, exported its
    # full batches on its own.
    exported_before_stop = {
        pid: count // BATCH_SIZE * BATCH_SIZE for pid, count in served_per_pid.items()
    }
    queued_at_stop = REQUEST_COUNT - sum(exported_before_stop.values())
    assert queued_at_stop > 0, "no span is left for the SIGTERM flush: change CYCLES or BATCH_SIZE"
    wait_until(
        lambda: spans_per_pid(sentry_ingest) == exported_before_stop,
        DELIVERY_TIMEOUT_S,
        lambda: (
            f"the ingest has {exported_before_stop} spans per worker pid before SIGTERM "
            f"(has {dict(spans_per_pid(sentry_ingest))})"
        ),
    )
    wait_until(
        lambda: sum(service.counts(SERVICE_NAME).values()) == REQUEST_COUNT - queued_at_stop,
        DELIVERY_TIMEOUT_S,
        lambda: (
            f"the service counts {REQUEST_COUNT - queued_at_stop} requests before SIGTERM "
            f"(counts {service.counts(SERVICE_NAME)})"
        ),
    )

    # SIGTERM to the master, which stops the workers. Each worker flushes its queued spans.
    assert app.stop() == 0, app.log_tail()
    wait_until(
        lambda: len(fleet_server_spans(sentry_ingest)) >= REQUEST_COUNT,
        DELIVERY_TIMEOUT_S,
        lambda: (
            f"the ingest has {REQUEST_COUNT} SERVER spans "
            f"(has {dict(spans_per_pid(sentry_ingest))}). App log:\n{app.log_tail()}"
        ),
    )
    wait_until(
        lambda: sum(service.counts(SERVICE_NAME).values()) >= REQUEST_COUNT,
        DELIVERY_TIMEOUT_S,
        lambda: (
            f"the service counts {REQUEST_COUNT} requests (counts {service.counts(SERVICE_NAME)})"
        ),
    )
    # A graceful stop sends what the Collector still queues, so the counts below are final.
    assert collector.stop() == 0, collector.log_tail()

    # The velocity service: every request counted once, per route and in total.
    expected_counts = Counter(item.case.key for item in served)
    expected_errors = Counter(item.case.key for item in served if item.status >= 500)
    rows = service.rows(service=SERVICE_NAME)
    counts = {key: row["count"] for (_, key), row in rows.items()}
    assert counts == dict(expected_counts)
    assert sum(counts.values()) == REQUEST_COUNT
    assert (
        rows[(SERVICE_NAME, "GET /unavailable/{region}")]["errors"]
        == expected_errors["GET /unavailable/{region}"]
    )
    # 4xx responses are not errors. /items/{item_id} has some 404s and (unmatched) only 404s.
    assert rows[(SERVICE_NAME, "GET /items/{item_id}")]["errors"] == 0
    assert rows[(SERVICE_NAME, "GET (unmatched)")]["errors"] == 0
    assert sum(row["errors"] for row in rows.values()) == sum(expected_errors.values())

    # The Sentry leg: the same SERVER spans, from every worker, accepted with the Collector's
    # "x-sentry-auth: sentry sentry_key=..." header.
    sentry_spans = fleet_server_spans(sentry_ingest)
    assert Counter(span.name for span in sentry_spans) == Counter(
        item.case.span_name for item in served
    )
    assert spans_per_pid(sentry_ingest) == served_per_pid
    assert sentry_ingest.rejected_requests() == []

    # sentry-sdk sent one error event per 5xx response, from the worker that served it. The
    # event's trace id leads to its SERVER span, which carries the worker's pid.
    server_errors_per_pid = Counter(item.pid for item in served if item.status >= 500)
    events = sentry_ingest.wait_for(sum(server_errors_per_pid.values()), source="events")
    pid_by_trace_id = {
        span.trace_id: span.attributes[WORKER_PID_ATTRIBUTE] for span in sentry_spans
    }
    event_pids = Counter(
        pid_by_trace_id.get(event["contexts"]["trace"]["trace_id"]) for event in events
    )
    assert event_pids == server_errors_per_pid
    assert {event["tags"]["route"] for event in events} == {"/unavailable/{region}"}
