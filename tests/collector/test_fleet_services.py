"""End-to-end: two services through one real Collector into one velocity service.

``shop`` and ``billing`` run the same app (tests/apps/fleet_app.py), so they share route
templates, each under ``opentelemetry-instrument uvicorn`` with its own ``OTEL_SERVICE_NAME``.
The velocity service maps them to Sentry projects 12 and 13 with ``VELOCITY_SENTRY_PROJECTS``.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.collector.conftest import (
    PROCESS_START_TIMEOUT_SECONDS,
    VENV_BIN,
    CollectorProcess,
    ServerProcess,
    VelocityService,
    instrumented_app_env,
    wait_until,
)
from tests.support.sentry_ingest import SentryIngest

SENTRY_ORG = "acme"
PROJECT_IDS = {"shop": 12, "billing": 13}
# Requests per service and route key; both services serve GET /items/{item_id}.
REQUESTS = {
    "shop": {"GET /items/{item_id}": 30, "GET /unavailable/{region}": 10},
    "billing": {"GET /items/{item_id}": 20, "POST /cart/{cart_id}/checkout": 5},
}
PATHS = {
    "GET /items/{item_id}": "/items/{n}",
    "GET /unavailable/{region}": "/unavailable/region-{n}",
    "POST /cart/{cart_id}/checkout": "/cart/{n}/checkout",
}
REQUEST_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 20.0


def send_requests(app_url: str, counts: dict[str, int]) -> None:
    with httpx.Client(base_url=app_url, timeout=REQUEST_TIMEOUT_S) as client:
        for key, count in counts.items():
            method = key.split(" ", 1)[0]
            for number in range(count):
                client.request(method, PATHS[key].format(n=number))


def test_two_services_kept_apart(
    collector_env: dict[str, str],
    start_collector: Callable[[dict[str, str]], CollectorProcess],
    start_server: Callable[..., ServerProcess],
    start_velocity_service: Callable[..., VelocityService],
    clean_environment: dict[str, str],
    sentry_ingest: SentryIngest,
) -> None:
    service = start_velocity_service(
        SENTRY_ORG=SENTRY_ORG,
        VELOCITY_SENTRY_PROJECTS=",".join(f"{name}={id_}" for name, id_ in PROJECT_IDS.items()),
    )
    collector_env["VELOCITY_OTLP_ENDPOINT"] = service.url
    collector_env["SENTRY_OTLP_TRACES_ENDPOINT"] = sentry_ingest.otlp_traces_url
    collector_env["SENTRY_PUBLIC_KEY"] = sentry_ingest.public_key
    collector = start_collector(collector_env)

    apps = {}
    for name in REQUESTS:
        env = instrumented_app_env(clean_environment, collector, name)
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        command = [
            str(VENV_BIN / "opentelemetry-instrument"),
            str(VENV_BIN / "uvicorn"),
            "tests.apps.fleet_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
        ]
        apps[name] = start_server(f"app-{name}", command, env)
    for name, app in apps.items():
        app.wait_until_ready("/_test/worker", PROCESS_START_TIMEOUT_SECONDS)
        send_requests(app.url, REQUESTS[name])
    for app in apps.values():
        # otel-velocity's handler flushes, then raises SIGTERM again, so the exit status
        # stays "terminated by SIGTERM".
        assert app.stop() == -signal.SIGTERM, app.log_tail()

    expected = {
        (name, key): count for name, counts in REQUESTS.items() for key, count in counts.items()
    }
    wait_until(
        lambda: {key: row["count"] for key, row in service.rows().items()} == expected,
        DELIVERY_TIMEOUT_S,
        lambda: (
            f"the service counts {expected} (counts "
            f"{ {key: row['count'] for key, row in service.rows().items()} })"
        ),
    )
    assert collector.stop() == 0, collector.log_tail()

    # One route template in two services: two rows, each with its own service's requests.
    rows = service.rows()
    assert rows[("shop", "GET /items/{item_id}")]["count"] == 30
    assert rows[("billing", "GET /items/{item_id}")]["count"] == 20
    assert {key: row["count"] for key, row in rows.items()} == expected
    assert rows[("shop", "GET /unavailable/{region}")]["errors"] == 10

    # ?service= filters the table to one service.
    billing = service.table(service="billing")
    assert {row["service"] for row in billing["rows"]} == {"billing"}
    assert {row["key"] for row in billing["rows"]} == set(REQUESTS["billing"])
    assert billing["total"] == len(REQUESTS["billing"])
    assert billing["services"] == ["billing", "shop"]

    # Each row's Sentry errors link points to its own service's project.
    for (name, key), row in rows.items():
        link = urlsplit(row["links"]["errors"])
        assert link.netloc == f"{SENTRY_ORG}.sentry.io", key
        assert parse_qs(link.query)["project"] == [str(PROJECT_IDS[name])], f"{name} {key}"

    # The Sentry leg got the same SERVER spans per service.
    sentry_counts = Counter(
        span.resource_attributes.get("service.name")
        for span in sentry_ingest.otlp_spans()
        if span.kind == "SPAN_KIND_SERVER"
    )
    assert sentry_counts == {name: sum(counts.values()) for name, counts in REQUESTS.items()}
    assert sentry_ingest.rejected_requests() == []
