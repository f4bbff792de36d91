"""Privacy: query strings, credentials and ids in raw paths stay out of what otel-velocity adds.

The real app runs under ``opentelemetry-instrument`` with sentry-sdk sending to the local ingest
server. Requests carry a query string with a token and an e-mail address, an ``Authorization``
header, a cookie and an ``X-Forwarded-For`` address, and unrouted paths carry a user id. None of
them may appear in a Sentry tag, in the transaction, fingerprint or contexts that otel-velocity
sets, in its own 5xx events, or in the velocity rows. sentry-sdk must not add headers, cookies
or the client address either, because otel-velocity starts it with ``send_default_pii=False``.

sentry-sdk itself still sends ``request.url`` and ``request.query_string`` with
``send_default_pii=False``, its logging integration keeps uvicorn's access log line (path,
query string and client address) as a breadcrumb, and exception events carry frame locals. Two
tests record the first two, and docs/security.md says how to remove them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from otel_velocity.config import SentrySettings
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.sentry.correlation import SentryCorrelation
from tests.support.app_process import AppProcess
from tests.support.otlp_sink import OtlpTraceSink
from tests.support.sentry_fixtures import scoped_sentry_client
from tests.support.sentry_ingest import SentryIngest

APP = "tests.apps.instrumented_app:app"

TOKEN = "tok-5ecret-q1"
EMAIL = "alice.5ecret@example.com"
BEARER = "bearer-5ecret-h2"
COOKIE = "cookie-5ecret-c3"
CLIENT_ADDRESS = "203.0.113.77"
USER_ID = "user-4711"
SECRETS = (TOKEN, EMAIL, BEARER, COOKIE, CLIENT_ADDRESS, USER_ID)
CREDENTIALS = (BEARER, COOKIE)

QUERY = f"?token={TOKEN}&email={EMAIL}"
HEADERS = {
    "Authorization": f"Bearer {BEARER}",
    "Cookie": f"session={COOKIE}",
    "X-Forwarded-For": CLIENT_ADDRESS,
    "Connection": "close",
}
REQUESTS = (
    "/unavailable/shard-7",  # 503 returned: otel-velocity's own event
    "/http-503",  # HTTPException 503: sentry-sdk's exception event
    "/boom/a",  # raised: sentry-sdk's exception event, tagged by otel-velocity
    "/message/route-template-id",  # capture_message in a routed request
    f"/maintenance/{USER_ID}/delete",  # 503 without a route: otel-velocity's own event
    f"/users/{USER_ID}/profile",  # 404 without a route: no event
)
OWN_EVENT_LOGGER = "otel_velocity"


@dataclass
class Run:
    events: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    statuses: list[int]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    import httpx

    with SentryIngest() as ingest, OtlpTraceSink() as sink:
        app = AppProcess(
            APP,
            {
                "SENTRY_DSN": ingest.dsn,
                "OTEL_SERVICE_NAME": "shop",
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
                "OTEL_PYTHON_DISTRO": "otel_velocity",
                "BUILD_TIME": "2026-12-01T10:00:00Z",
            },
        )
        try:
            app.wait_ready()
            statuses = []
            with httpx.Client(base_url=app.url, timeout=10.0) as client:
                for path in REQUESTS:
                    statuses.append(client.get(path + QUERY, headers=HEADERS).status_code)
                rows = client.get("/_test/velocity").json()
        finally:
            app.stop()
        events = ingest.wait_for(5, description="the 5xx, exception and message events")
        yield Run(events, rows, statuses)


def own_fields(event: dict[str, Any]) -> dict[str, Any]:
    """Return the parts of an event that otel-velocity sets or creates."""
    contexts = event.get("contexts", {})
    return {
        "tags": event.get("tags"),
        "transaction": event.get("transaction"),
        "fingerprint": event.get("fingerprint"),
        "trace": contexts.get("trace"),
        "response": contexts.get("response"),
        "otel_velocity": contexts.get("otel_velocity"),
        "message": event.get("message") if event.get("logger") == OWN_EVENT_LOGGER else None,
    }


def leaks(value: object, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    text = json.dumps(value, ensure_ascii=False)
    return [secret for secret in secrets if secret in text]


def test_request_statuses(run: Run) -> None:
    assert run.statuses == [503, 503, 500, 200, 503, 404]


def test_unrouted_5xx_event_sent(run: Run) -> None:
    # The HTTPException 503 is captured by sentry-sdk's FastAPI integration instead.
    own = [e for e in run.events if e.get("logger") == OWN_EVENT_LOGGER]
    assert len(own) == 2
    assert "GET (unmatched) responded with HTTP 503" in [e["message"] for e in own]


def test_unrouted_transaction_is_route_key(run: Run) -> None:
    own = [e for e in run.events if e.get("tags", {}).get("route") == "(unmatched)"]
    assert len(own) == 1
    assert own[0]["transaction"] == "GET (unmatched)"


def test_event_tags_clean(run: Run) -> None:
    for event in run.events:
        assert leaks(event.get("tags")) == [], event["event_id"]


def test_own_event_fields_clean(run: Run) -> None:
    for event in run.events:
        assert leaks(own_fields(event)) == [], event["event_id"]


def test_own_events_clean_but_sdk_parts(run: Run) -> None:
    """otel-velocity's own events, but for the request and breadcrumbs that sentry-sdk adds."""
    for event in run.events:
        if event.get("logger") != OWN_EVENT_LOGGER:
            continue
        rest = {k: v for k, v in event.items() if k not in ("request", "breadcrumbs")}
        assert leaks(rest) == [], event["event_id"]


def test_rows_clean(run: Run) -> None:
    assert leaks(run.rows) == []
    assert not [row for row in run.rows if "maintenance" in row["key"] or "users" in row["key"]]


def test_no_credentials_anywhere(run: Run) -> None:
    for event in run.events:
        assert leaks(event, CREDENTIALS) == [], event["event_id"]


def test_headers_without_pii(run: Run) -> None:
    for event in run.events:
        headers = {k.lower(): v for k, v in event.get("request", {}).get("headers", {}).items()}
        assert headers.get("authorization") in (None, "", "[Filtered]")
        assert headers.get("cookie") in (None, "", "[Filtered]")
        assert headers.get("x-forwarded-for") in (None, "", "[Filtered]")


def test_no_cookies_or_client_address(run: Run) -> None:
    for event in run.events:
        request = event.get("request", {})
        assert not request.get("cookies")
        assert "REMOTE_ADDR" not in request.get("env", {})
        assert "ip_address" not in event.get("user", {})


def test_sentry_sdk_sends_query_string(run: Run) -> None:
    """A record of sentry-sdk's behaviour, not of otel-velocity's: see docs/security.md."""
    query_strings = [e.get("request", {}).get("query_string") for e in run.events]
    assert any(TOKEN in (query or "") for query in query_strings)


def test_sentry_sdk_sends_access_log_breadcrumb(run: Run) -> None:
    """sentry-sdk's logging integration keeps uvicorn's access log line, query string included."""
    breadcrumbs = [b for e in run.events for b in e.get("breadcrumbs", {}).get("values", [])]
    assert any(TOKEN in (b.get("message") or "") for b in breadcrumbs)


def test_5xx_event_omits_raw_span_name() -> None:
    """An unrouted SERVER span may be named after the raw path, as the ASGI middleware does."""
    span = ReadableSpan(
        name=f"GET /users/{USER_ID}/reset",
        context=SpanContext(trace_id=7, span_id=9, is_remote=False),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.path": f"/users/{USER_ID}/reset",
            "http.response.status_code": 503,
        },
        resource=Resource({"service.name": "shop"}),
        start_time=1_000_000,
        end_time=4_000_000,
    )
    correlation = SentryCorrelation(SentrySettings(dsn="http://unused@127.0.0.1:9/1"))
    processor = VelocitySpanProcessor(
        VelocityRegistry(clock=lambda: 1000.0),
        on_server_span_end=correlation.on_server_span_end,
    )

    with SentryIngest() as ingest:
        with scoped_sentry_client(ingest.dsn):
            processor.on_end(span)
            sentry_sdk.flush()
        event = ingest.wait_for(1)[0]

    assert event["message"] == "GET (unmatched) responded with HTTP 503"
    assert leaks(event) == []
