"""A stand-in velocity service and a headless Chromium for the page tests.

``build_app`` serves the real page files from
``service/otel_velocity_service/static`` at ``GET /velocity`` and
``/static/...``, and serves ``GET /ops/velocity`` from a ``VelocityStub``
that each test fills. To test the page against the real service, replace
``build_app`` with the service's app factory and feed it spans instead.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from tests.support.browser import launch_chromium
from tests.support.uvicorn_thread import serve_in_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO_ROOT / "service" / "otel_velocity_service" / "static"


Payload = dict[str, Any]


def make_row(service: str, method: str, route: str, **overrides: Any) -> Payload:
    """Return one table row in the ``GET /ops/velocity`` contract.

    Defaults describe a healthy route with Sentry links. ``overrides``
    replaces any field.
    """
    now_s = 1733340000.0
    row: Payload = {
        "service": service,
        "method": method,
        "route": route,
        "key": f"{method} {route}",
        "rps": 10.5,
        "rps_5m": 9.8,
        "p50_ms": 12.1,
        "p95_ms": 40.2,
        "p99_ms": 80.0,
        "p95_5m_ms": 38.0,
        "err_rate": 0.02,
        "err_rate_5m": 0.01,
        "count": 600,
        "errors": 12,
        "count_5m": 2900,
        "baseline_p95_ms": 38.0,
        "regress_pct": 5.8,
        "is_regress": False,
        "trend": [
            {
                "time_s": now_s - 300.0 + 60.0 * index,
                "rps": 9.0 + index * 0.4,
                "p95_ms": 36.0 + (index % 3) * 2.0,
                "err_rate": 0.01,
            }
            for index in range(5)
        ],
        "exemplars": [],
        "links": {
            "errors": f"https://acme.sentry.io/issues/?project=12&query={service}-{method}",
            "traces": f"https://acme.sentry.io/explore/traces/?project=12&query={service}",
        },
    }
    row.update(overrides)
    return row


def make_payload(
    rows: list[Payload],
    *,
    sentry_enabled: bool = True,
    sentry_reason: str | None = None,
    overflow_routes: int = 0,
    overflow_spans: int = 0,
) -> Payload:
    """Return a whole ``GET /ops/velocity`` response holding ``rows``."""
    return {
        "generated_at_s": 1733340000.0,
        "window_s": 60,
        "sentry": {"enabled": sentry_enabled, "reason": sentry_reason},
        "services": sorted({row["service"] for row in rows}),
        "total": len(rows),
        "offset": 0,
        "limit": 100,
        "overflow": {"routes": overflow_routes, "spans": overflow_spans},
        "rows": rows,
    }


@dataclass(frozen=True)
class RecordedRequest:
    """Query parameters and Authorization header of one data request."""

    params: Mapping[str, str]
    authorization: str | None


class VelocityStub:
    """Mutable stand-in for the ``GET /ops/velocity`` endpoint.

    The test thread sets the payload while the server thread reads it, so
    every access holds a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._payload: Payload = make_payload([])
        self._requests: list[RecordedRequest] = []
        self._required_token: str | None = None

    def reset(self) -> None:
        with self._lock:
            self._payload = make_payload([])
            self._requests = []
            self._required_token = None

    def set_payload(self, payload: Payload) -> None:
        with self._lock:
            self._payload = copy.deepcopy(payload)

    def require_token(self, token: str | None) -> None:
        """Return 401 to requests without ``Authorization: Bearer <token>``."""
        with self._lock:
            self._required_token = token

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def respond(self, params: Mapping[str, str], authorization: str | None) -> tuple[int, Payload]:
        """Return the status and body for one request, as the real endpoint would."""
        with self._lock:
            self._requests.append(RecordedRequest(dict(params), authorization))
            if self._required_token is not None and (
                authorization != f"Bearer {self._required_token}"
            ):
                return 401, {"detail": "missing or invalid bearer token"}
            payload = copy.deepcopy(self._payload)

        service = params.get("service")
        rows = payload["rows"]
        if service:
            rows = [row for row in rows if row["service"] == service]
        offset = int(params.get("offset", "0"))
        limit = int(params.get("limit", "100"))

        payload["total"] = len(rows)
        payload["offset"] = offset
        payload["limit"] = limit
        payload["rows"] = rows[offset : offset + limit]
        return 200, payload


def build_app(stub: VelocityStub) -> FastAPI:
    """Return an app that serves the page files and the stub's data."""
    app = FastAPI()

    @app.get("/velocity")
    def velocity_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "velocity.html", headers={"Cache-Control": "no-store"})

    @app.get("/ops/velocity")
    def velocity_data(request: Request) -> JSONResponse:
        status, body = stub.respond(
            dict(request.query_params), request.headers.get("authorization")
        )
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def run_server(app: FastAPI) -> AbstractContextManager[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port and yield its base URL."""
    return serve_in_thread(app, lifespan="off")


@dataclass(frozen=True)
class VelocityServer:
    """A running stand-in service: its base URL and the stub behind it."""

    base_url: str
    stub: VelocityStub

    def page_url(self, query: str = "", fragment: str = "") -> str:
        url = f"{self.base_url}/velocity"
        if query:
            url += f"?{query}"
        if fragment:
            url += f"#{fragment}"
        return url


@pytest.fixture(scope="session")
def velocity_server_session() -> Iterator[VelocityServer]:
    stub = VelocityStub()
    with run_server(build_app(stub)) as base_url:
        yield VelocityServer(base_url, stub)


@pytest.fixture
def velocity_server(velocity_server_session: VelocityServer) -> VelocityServer:
    """The shared stand-in service, with an empty payload and request log."""
    velocity_server_session.stub.reset()
    return velocity_server_session


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright, open for one test module."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium_browser: Any, velocity_server: VelocityServer) -> Iterator[Any]:
    """A fresh page whose requests may reach only the stand-in service."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    allowed_netloc = urlsplit(velocity_server.base_url).netloc

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc == allowed_netloc:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
