"""Access control of the real service: listen address, token, CORS, and the page's token.

``tests/service/test_api_auth.py`` covers the 401 responses of each endpoint, the exporter with
and without the token, and CORS for a configured origin. This file adds what it leaves out. The
browser test runs the real service with its access log on and records every request the page
makes, on both sides, to check where the token from ``#token=`` can end up.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from otel_velocity_service import ServiceSettings, create_app
from otel_velocity_service.cli import build_parser
from playwright.sync_api import expect
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    PROTOBUF,
    ManualClock,
    chromium_fixture,
    manual_clock_fixture,
    open_page,
    pb,
    recorded_logs,
    serve_app,
    service_process,
    start_service_fixture,
)

from otel_velocity import VelocityRegistry

TOKEN = "tok-3f9a1c7e5b2d"
WRONG_TOKEN = "wrong-88c1d0e4"
PREFLIGHT = {
    "Origin": "https://ops.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


# --- Listen address ---------------------------------------------------------------------------


def test_cli_host_defaults_to_loopback() -> None:
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_served_only_on_loopback() -> None:
    with service_process({}) as process:
        addresses = process.listening_addresses()

    assert addresses == [f"127.0.0.1:{process.port}"]


# --- CORS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ops/velocity", "/v1/traces", "/ops/sentry-link"])
def test_preflight_without_cors_has_no_allow_origin(start_service: Any, path: str) -> None:
    service = start_service()

    response = httpx.options(service.url(path), headers=PREFLIGHT)

    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-headers" not in response.headers


def test_preflight_from_unlisted_origin_refused(start_service: Any) -> None:
    service = start_service(ServiceSettings(cors_origins=("https://ops.example",)))

    response = httpx.options(
        service.url("/v1/traces"), headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


# --- Token ------------------------------------------------------------------------------------


def test_token_compared_in_constant_time(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = start_service(ServiceSettings(token=TOKEN))
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return compare_digest(left, right)

    monkeypatch.setattr("otel_velocity_service.auth.hmac.compare_digest", spy)

    response = httpx.get(
        service.url("/ops/velocity"), headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
    )

    assert response.status_code == 401
    assert compared == [(WRONG_TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_token_scheme_case_insensitive(start_service: Any, scheme: str) -> None:
    service = start_service(ServiceSettings(token=TOKEN))

    response = httpx.get(
        service.url("/ops/velocity"), headers={"Authorization": f"{scheme} {TOKEN}"}
    )

    assert response.status_code == 200


@pytest.mark.parametrize("header", ["", "Bearer", f"Bearer  {TOKEN}", f"Token {TOKEN}", TOKEN])
def test_malformed_authorization_is_401(start_service: Any, header: str) -> None:
    service = start_service(ServiceSettings(token=TOKEN))

    response = service_post(service.url("/v1/traces"), header)

    assert response.status_code == 401
    assert service.registry.rows() == []


def service_post(url: str, authorization: str) -> httpx.Response:
    headers = {"Content-Type": PROTOBUF}
    if authorization:
        headers["Authorization"] = authorization
    return httpx.post(url, content=pb.spans_request([pb.span()]), headers=headers, timeout=10)


def test_rejected_token_never_logged(start_service: Any) -> None:
    service = start_service(ServiceSettings(token=TOKEN))

    with recorded_logs("otel_velocity_service", "uvicorn") as logs:
        service_post(service.url("/v1/traces"), f"Bearer {WRONG_TOKEN}")
        httpx.get(service.url("/ops/velocity"), headers={"Authorization": f"Bearer {WRONG_TOKEN}"})

    assert any("missing or invalid bearer token" in message for message in logs.messages())
    assert not [message for message in logs.messages() if WRONG_TOKEN in message]


# --- The page in a real browser ---------------------------------------------------------------


@dataclass
class SeenRequest:
    """One request as the server received it."""

    path: str
    query: str
    referer: str | None
    authorization: str | None


@dataclass
class RequestRecorder:
    """ASGI middleware that records every HTTP request's path, query and headers."""

    app: Any
    requests: list[SeenRequest] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {
                name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
            }
            self.requests.append(
                SeenRequest(
                    scope["path"],
                    scope["query_string"].decode("latin-1"),
                    headers.get("referer"),
                    headers.get("authorization"),
                )
            )
        await self.app(scope, receive, send)


@pytest.fixture
def guarded_page_server(manual_clock: ManualClock) -> Iterator[tuple[str, RequestRecorder, Any]]:
    """The service with a token, an access log and a request recorder.

    Yields the base URL, the recorder and the log records of uvicorn and the service.
    """
    registry = VelocityRegistry(clock=manual_clock)
    recorder = RequestRecorder(
        create_app(registry, ServiceSettings(token=TOKEN), clock=manual_clock)
    )
    # uvicorn.access stops propagating once a server in this process ran without an access
    # log, so it gets the handler itself.
    with (
        recorded_logs("uvicorn.error", "uvicorn.access", "otel_velocity_service") as logs,
        serve_app(recorder, access_log=True) as base_url,
    ):
        response = httpx.post(
            base_url + "/v1/traces",
            content=pb.spans_request([pb.span(route="/orders/{order_id}")]),
            headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200
        recorder.requests.clear()
        yield base_url, recorder, logs


def test_page_token_stays_out_of_logs_and_referer(
    chromium: Any, guarded_page_server: tuple[str, RequestRecorder, Any]
) -> None:
    base_url, recorder, logs = guarded_page_server

    with open_page(chromium, base_url) as view:
        view.page.goto(f"{base_url}/velocity?refresh_ms=200#token={TOKEN}")
        expect(view.page.locator("#velocity-rows .route-template")).to_have_text(
            ["/orders/{order_id}"]
        )
        expect(view.page.locator("#status")).to_contain_text("1 route")
        address = view.page.url
        browser_headers = [request.all_headers() for request in view.requests]

    assert TOKEN not in address
    assert "#" not in address
    assert [headers for headers in browser_headers if "referer" in headers] == []
    assert recorder.requests, "the server saw no request"
    for seen in recorder.requests:
        assert TOKEN not in seen.path + seen.query, seen
        assert seen.referer is None, seen
    data_requests = [seen for seen in recorder.requests if seen.path == "/ops/velocity"]
    assert data_requests
    assert {seen.authorization for seen in data_requests} == {f"Bearer {TOKEN}"}
    other_requests = [seen for seen in recorder.requests if seen.path != "/ops/velocity"]
    assert {seen.authorization for seen in other_requests} == {None}
    access_lines = [
        record.getMessage() for record in logs.records if record.name == "uvicorn.access"
    ]
    assert any("/ops/velocity" in line for line in access_lines)
    assert not [message for message in logs.messages() if TOKEN in message]


def test_page_wrong_token_not_authorized(
    chromium: Any, guarded_page_server: tuple[str, RequestRecorder, Any]
) -> None:
    base_url, recorder, logs = guarded_page_server

    with open_page(chromium, base_url) as view:
        view.page.goto(f"{base_url}/velocity?refresh_ms=200#token={WRONG_TOKEN}")
        expect(view.page.locator("#status")).to_contain_text("Not authorized (HTTP 401)")
        expect(view.page.locator("#velocity-rows tr")).to_have_count(0)
        address = view.page.url

    assert WRONG_TOKEN not in address
    assert not [message for message in logs.messages() if WRONG_TOKEN in message]
    assert not [seen for seen in recorder.requests if WRONG_TOKEN in seen.path + seen.query]


def test_page_fragment_removed_keeps_other_parts(
    chromium: Any, guarded_page_server: tuple[str, RequestRecorder, Any]
) -> None:
    base_url, _, _ = guarded_page_server

    with open_page(chromium, base_url) as view:
        view.page.goto(f"{base_url}/velocity?refresh_ms=200#view=1&token={TOKEN}")
        expect(view.page.locator("#velocity-rows tr")).to_have_count(1)
        address = view.page.url

    assert re.search(r"#view=1$", address), address
