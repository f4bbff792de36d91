"""A real FastAPI app under ``opentelemetry-instrument`` with the real sentry-sdk.

One module-scoped scenario sends a fixed set of requests; each test checks one promise against
what the app's windows, a local OTLP sink and a local Sentry ingest received. Spans are batched
with a one-minute delay, so they reach the sinks only through the SIGTERM flush.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.app_process import AppProcess
from tests.support.otlp_sink import OtlpTraceSink
from tests.support.relay import normalize_event, tag_problems
from tests.support.sentry_ingest import SentryIngest

APP = "tests.apps.instrumented_app:app"
RELEASE = "shop@1.2.3"
ENVIRONMENT = "staging"
BUILD_TIME = "2026-12-01T10:00:00Z"
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

REQUESTS = (
    [f"/items/{i}" for i in range(10)]
    + [f"/sync/{n}" for n in range(5)]
    + [f"/unavailable/shard-{n}" for n in range(3)]
    + ["/boom/a", "/boom/b", "/sync-boom", "/http-503", "/teapot", "/teapot"]
    + ["/nope/1", "/nope/2?q=secret", "/definitely/not/here"]
    + ["/message/user-42"]
)


@dataclass
class Scenario:
    ingest: SentryIngest
    sink: OtlpTraceSink
    rows: dict[str, dict[str, Any]]
    setup: dict[str, Any]
    statuses: Counter[str] = field(default_factory=Counter)
    message_trace_id: str = ""
    propagation: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    concurrent_traces: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def events_for(self, route: str) -> list[dict[str, Any]]:
        return [e for e in self.ingest.events() if e.get("tags", {}).get("route") == route]

    def server_spans(self) -> list[Any]:
        return [s for s in self.sink.spans() if s.kind == 2]


CONCURRENT = 24


def _concurrent_requests(base_url: str) -> dict[str, str]:
    """Send requests to an async and a sync route at once; return trace id per message."""

    async def send_all() -> dict[str, str]:
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            paths = [f"/{side}/{n}" for n in range(CONCURRENT // 2) for side in ("left", "right")]
            responses = await asyncio.gather(*(client.get(path) for path in paths))
        return {
            f"from {path.split('/')[1]} {path.split('/')[2]}": response.json()["trace_id"]
            for path, response in zip(paths, responses, strict=True)
        }

    return asyncio.run(send_all())


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    with SentryIngest() as ingest, OtlpTraceSink() as sink:
        app = AppProcess(
            APP,
            {
                "SENTRY_DSN": ingest.dsn,
                "SENTRY_RELEASE": RELEASE,
                "SENTRY_ENVIRONMENT": ENVIRONMENT,
                "BUILD_TIME": BUILD_TIME,
                "OTEL_SERVICE_NAME": "shop",
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
                "OTEL_BSP_SCHEDULE_DELAY": "60000",
                "OTEL_PYTHON_DISTRO": "otel_velocity",
            },
        )
        try:
            app.wait_ready()
            statuses: Counter[str] = Counter()
            # A raised exception makes uvicorn drop the connection after the 500, so no reuse.
            with httpx.Client(
                base_url=app.url, timeout=10.0, headers={"Connection": "close"}
            ) as client:
                for path in REQUESTS:
                    statuses[f"{path} {client.get(path).status_code}"] += 1
                message_trace_id = client.get("/message/user-43").json()["trace_id"]
                propagation = client.get(
                    "/propagation",
                    headers={"traceparent": f"00-{INCOMING_TRACE_ID}-00f067aa0ba902b7-01"},
                ).json()
                concurrent_traces = _concurrent_requests(app.url)
                rows = {row["key"]: row for row in client.get("/_test/velocity").json()}
                setup = client.get("/_test/setup").json()
        finally:
            exit_code = app.stop()

        result = Scenario(ingest, sink, rows, setup, statuses, message_trace_id, propagation)
        result.exit_code = exit_code
        result.output = app.output
        result.concurrent_traces = concurrent_traces
        ingest.wait_for(9 + CONCURRENT, description="error and message events")
        yield result


def test_requests_answered_as_designed(scenario: Scenario) -> None:
    assert scenario.statuses["/unavailable/shard-0 503"] == 1
    assert scenario.statuses["/boom/a 500"] == 1
    assert scenario.statuses["/http-503 503"] == 1
    assert scenario.statuses["/teapot 418"] == 2
    assert scenario.statuses["/nope/1 404"] == 1


def test_processor_installed_once(scenario: Scenario) -> None:
    assert scenario.setup["provider"] == "TracerProvider"
    assert scenario.setup["velocity_processors"] == 1
    assert scenario.setup["protocol"] == "http/protobuf"


def test_windows_count_each_route(scenario: Scenario) -> None:
    rows = scenario.rows
    assert rows["GET /items/{item_id}"]["count"] == 10
    assert rows["GET /sync/{n}"]["count"] == 5
    assert rows["GET /unavailable/{shard}"]["count"] == 3
    assert rows["GET /boom/{case}"]["count"] == 2
    assert rows["GET /teapot"]["count"] == 2
    assert rows["GET /message/{user_id}"]["count"] == 2


def test_windows_count_errors_not_4xx(scenario: Scenario) -> None:
    rows = scenario.rows
    assert rows["GET /unavailable/{shard}"]["errors"] == 3
    assert rows["GET /boom/{case}"]["errors"] == 2
    assert rows["GET /sync-boom"]["errors"] == 1
    assert rows["GET /http-503"]["errors"] == 1
    assert rows["GET /teapot"]["errors"] == 0
    assert rows["GET /items/{item_id}"]["errors"] == 0


def test_windows_fold_unknown_paths(scenario: Scenario) -> None:
    rows = scenario.rows
    assert rows["GET (unmatched)"]["count"] == 3
    assert rows["GET (unmatched)"]["errors"] == 0
    assert not any("nope" in key or "definitely" in key for key in rows)


def test_windows_service_name(scenario: Scenario) -> None:
    assert {row["service"] for row in scenario.rows.values()} == {"shop"}


def test_5xx_without_raise_captured_once_each(scenario: Scenario) -> None:
    events = scenario.events_for("/unavailable/{shard}")
    assert len(events) == 3
    for event in events:
        assert event["message"] == "GET /unavailable/{shard} responded with HTTP 503"
        assert event["level"] == "error"
        assert event["tags"]["method"] == "GET"
        assert event["tags"]["status_code"] == "503"
        assert event["fingerprint"] == [
            "otel-velocity-http-5xx",
            "GET",
            "/unavailable/{shard}",
            "503",
        ]
        assert event["contexts"]["otel_velocity"]["duration_ms"] >= 0
        assert "duration_ms" not in event["tags"]


def test_raised_5xx_reported_once_as_exception(scenario: Scenario) -> None:
    events = scenario.events_for("/boom/{case}")
    assert len(events) == 2
    for event in events:
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
        assert event["tags"]["status_code"] == "500"
        assert event["tags"]["method"] == "GET"
        assert "message" not in event or "responded with HTTP" not in event["message"]


def test_sync_raise_reported_once(scenario: Scenario) -> None:
    events = scenario.events_for("/sync-boom")
    assert len(events) == 1
    assert events[0]["exception"]["values"][-1]["type"] == "ValueError"


def test_http_exception_5xx_reported_once(scenario: Scenario) -> None:
    assert len(scenario.events_for("/http-503")) == 1


def test_no_events_for_2xx_and_4xx(scenario: Scenario) -> None:
    for route in ("/items/{item_id}", "/sync/{n}", "/teapot", "(unmatched)"):
        assert scenario.events_for(route) == []


def test_every_event_has_release_and_build_time(scenario: Scenario) -> None:
    events = scenario.ingest.events()
    assert events
    for event in events:
        assert event["release"] == RELEASE
        assert event["environment"] == ENVIRONMENT
        assert event["tags"]["build_time"] == BUILD_TIME
        assert event["transaction"] == f"{event['tags']['method']} {event['tags']['route']}"


def test_event_ids_unique(scenario: Scenario) -> None:
    ids = [event["event_id"] for event in scenario.ingest.events()]
    assert len(ids) == len(set(ids))


def test_message_event_carries_request_tags_and_trace(scenario: Scenario) -> None:
    events = scenario.events_for("/message/{user_id}")
    assert len(events) == 2
    trace_ids = {event["contexts"]["trace"]["trace_id"] for event in events}
    assert scenario.message_trace_id in trace_ids
    assert all(event["tags"]["method"] == "GET" for event in events)


def test_event_trace_ids_match_server_spans(scenario: Scenario) -> None:
    spans_by_trace = {span.trace_id.hex(): span for span in scenario.server_spans()}
    for event in scenario.ingest.events():
        trace = event["contexts"]["trace"]
        span = spans_by_trace.get(trace["trace_id"])
        assert span is not None, f"no server span for event {event['event_id']}"
        route = next(a.value.string_value for a in span.attributes if a.key == "http.route")
        assert route == event["tags"]["route"]


def test_5xx_event_span_id_is_server_span(scenario: Scenario) -> None:
    span_ids = {span.span_id.hex() for span in scenario.server_spans()}
    for event in scenario.events_for("/unavailable/{shard}"):
        assert event["contexts"]["trace"]["span_id"] in span_ids


def test_tags_survive_relay_normalizer(scenario: Scenario) -> None:
    for event in scenario.ingest.events():
        assert tag_problems(event) == []
        normalized = normalize_event(event)
        tags = dict(normalized["tags"])
        assert tags["route"] == event["tags"]["route"]


def test_sigterm_flushes_batched_spans(scenario: Scenario) -> None:
    names = [span.name for span in scenario.server_spans() if "/_test/" not in span.name]
    assert len(names) == len(REQUESTS) + 2 + CONCURRENT
    assert scenario.exit_code == -15


def test_spans_reach_sentry_otlp_named_by_route(scenario: Scenario) -> None:
    names = Counter(
        span.name for span in scenario.ingest.otlp_spans() if span.kind == "SPAN_KIND_SERVER"
    )
    assert names["GET /items/{item_id}"] == 10
    assert names["GET /unavailable/{shard}"] == 3


def test_traceparent_propagates_in(scenario: Scenario) -> None:
    assert scenario.propagation["trace_id"] == INCOMING_TRACE_ID


def test_traceparent_propagates_out(scenario: Scenario) -> None:
    outgoing = scenario.propagation["outgoing"]
    assert outgoing["traceparent"].split("-")[1] == INCOMING_TRACE_ID
    assert outgoing["sentry-trace"].split("-")[0] == INCOMING_TRACE_ID


def test_no_internal_faults_logged(scenario: Scenario) -> None:
    assert "otel-velocity:" not in scenario.output.replace("otel-velocity: installed", "")


def test_concurrent_requests_keep_their_own_tags(scenario: Scenario) -> None:
    events = {
        event["message"]: event
        for event in scenario.ingest.events()
        if event.get("message", "").startswith("from ")
    }
    assert len(events) == CONCURRENT
    for message, event in events.items():
        side = message.split()[1]
        assert event["tags"]["route"] == f"/{side}/{{n}}"
        assert event["contexts"]["trace"]["trace_id"] == scenario.concurrent_traces[message]


def test_sentry_tracing_stays_off(scenario: Scenario) -> None:
    assert scenario.ingest.transactions() == []
    assert scenario.ingest.rejected_requests() == []


def test_asgi_message_spans_dropped_by_default(scenario: Scenario) -> None:
    names = {span.name for span in scenario.sink.spans()}
    assert not any(name.endswith(("http send", "http receive")) for name in names)
    assert "GET /items/{item_id}" in names
