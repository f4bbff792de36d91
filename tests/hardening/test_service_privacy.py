"""Privacy: no query string or raw path of an unrouted request reaches the service's output.

Route keys come from ``http.route`` only, so a SERVER span without one lands in the
``(unmatched)`` row whatever its URL. The spans here carry a secret in every other place an
instrumentation puts the URL, in both HTTP convention generations and in the span name.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from otel_velocity_service import ServiceSettings
from otel_velocity_service.links import SentryLinkSettings
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    JSON,
    RunningService,
    manual_clock_fixture,
    pb,
    start_service_fixture,
)

SECRET = "secret"
URL_ATTRIBUTES = {
    "url.full": f"https://shop.example/login?token={SECRET}",
    "url.path": f"/login/{SECRET}",
    "url.query": f"token={SECRET}",
    "http.target": f"/login?token={SECRET}",
    "http.url": f"https://shop.example/login?token={SECRET}",
    "server.address": f"{SECRET}.shop.example",
}


def unrouted_span(number: int) -> bytes:
    attributes = [
        pb.key_value(key, pb.string_value(value.replace(SECRET, f"{SECRET}{number}")))
        for key, value in URL_ATTRIBUTES.items()
    ]
    return pb.span(
        route=None,
        status=404,
        name=f"GET /login?token={SECRET}{number}",
        extra_attributes=attributes,
    )


@pytest.fixture
def linked_service(start_service: Any) -> RunningService:
    return start_service(
        ServiceSettings(sentry_links=SentryLinkSettings(org="acme", project_id=12))
    )


def test_unrouted_secret_lands_in_unmatched(linked_service: RunningService) -> None:
    body = pb.spans_request([unrouted_span(number) for number in range(5)])

    response = linked_service.post(body)

    assert response.status_code == 200
    assert linked_service.counts() == {("shop", "GET (unmatched)"): 5}


def test_unrouted_secret_absent_from_output(linked_service: RunningService) -> None:
    linked_service.post(pb.spans_request([unrouted_span(number) for number in range(5)]))

    table = httpx.get(linked_service.url("/ops/velocity"), timeout=10)
    link = httpx.get(
        linked_service.url("/ops/sentry-link"),
        params={"route": "GET (unmatched)", "service": "shop"},
        timeout=10,
    )

    assert table.status_code == 200
    assert link.status_code == 200
    assert SECRET not in table.text
    assert SECRET not in link.text


def test_unrouted_secret_absent_via_json(linked_service: RunningService) -> None:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": f"GET /login?token={SECRET}",
        "kind": 2,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000005000000",
        "attributes": [
            {"key": key, "value": {"stringValue": value}} for key, value in URL_ATTRIBUTES.items()
        ],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}

    response = linked_service.post(json.dumps(document).encode(), JSON)

    assert response.status_code == 200
    assert linked_service.counts() == {("unknown_service", "_OTHER (unmatched)"): 1}
    assert SECRET not in httpx.get(linked_service.url("/ops/velocity"), timeout=10).text
