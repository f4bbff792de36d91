"""The service's own requests never show in its table, even when it is instrumented.

Each test instruments an app with the FastAPI instrumentation and a tracer provider that has
the in-process velocity processor installed (``otel_velocity.install``), as
``opentelemetry-instrument`` would. The standalone service also exports its own spans to its
own ``/v1/traces``.
"""

from __future__ import annotations

import importlib
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import serve_app
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otel_velocity_service import ServiceSettings, create_app, create_velocity_router

from otel_velocity import VelocityRegistry, VelocitySettings, install

OWN_SERVICE = "velocity-under-test"

# The package re-exports the function install(), which hides the module of the same name.
install_module = importlib.import_module("otel_velocity.install")


@pytest.fixture
def installed(manual_clock, monkeypatch) -> Iterator[tuple[TracerProvider, VelocityRegistry]]:
    """A provider with the in-process processor; restores the global registry and SIGTERM."""
    monkeypatch.setattr(install_module, "_registry", None)
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    provider = TracerProvider(resource=Resource.create({"service.name": OWN_SERVICE}))
    registry = VelocityRegistry(clock=manual_clock)
    install(provider, settings=VelocitySettings(), registry=registry)
    try:
        yield provider, registry
    finally:
        provider.shutdown()
        signal.signal(signal.SIGTERM, previous_sigterm)


def in_process_keys(registry: VelocityRegistry) -> set[tuple[str, str]]:
    return {(stats.service, str(stats.key)) for stats in registry.rows()}


def test_service_leaves_out_own_spans(installed, manual_clock, server_spans):
    provider, in_process = installed
    otlp_registry = VelocityRegistry(clock=manual_clock)
    app = create_app(otlp_registry, ServiceSettings(), clock=manual_clock)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    with serve_app(app) as base_url:
        # The service exports its own spans to itself, as a user might configure by mistake.
        # A batch processor exports from its own thread; a simple one would block the
        # server's event loop on a request to that same server.
        batch = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{base_url}/v1/traces", timeout=5),
            schedule_delay_millis=50,
        )
        provider.add_span_processor(batch)
        with httpx.Client(base_url=base_url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/velocity").status_code == 200
            assert client.get("/static/velocity.js").status_code == 200
            assert client.get("/favicon.ico").status_code == 404
            assert client.get("/ops/sentry-link", params={"route": "GET /x"}).status_code == 404
            server_spans.add("/items/{item_id}", service="shop")
            assert server_spans.export(base_url).name == "SUCCESS"
            table = client.get("/ops/velocity").json()
        # Each export makes one more span of the service, so force_flush would never find the
        # queue empty: wait until the own spans have arrived instead.
        totals = app.state.ingest_totals
        deadline = time.monotonic() + 10.0
        while totals.own_spans < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        final_table = httpx.get(f"{base_url}/ops/velocity").json()
        batch.shutdown()

    # The processor did count the service's own requests in the in-process registry ...
    own_keys = {key for service, key in in_process_keys(in_process) if service == OWN_SERVICE}
    assert {"GET /healthz", "GET /ops/velocity", "POST /v1/traces", "GET (unmatched)"} <= own_keys
    # ... and none of them reached the service's table, through OTLP or otherwise.
    assert totals.own_spans >= 8
    assert otlp_registry.services() == ["shop"]
    for body in (table, final_table):
        assert body["services"] == ["shop"]
        assert [row["key"] for row in body["rows"]] == ["GET /items/{item_id}"]


def test_service_over_in_process_registry_hides_own_rows(installed, manual_clock):
    provider, in_process = installed
    app = create_app(in_process, ServiceSettings(), clock=manual_clock)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    with serve_app(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/healthz")
        client.get("/ops/velocity")
        body = client.get("/ops/velocity").json()

    assert (OWN_SERVICE, "GET /healthz") in in_process_keys(in_process)
    assert body["rows"] == []
    assert body["services"] == []


def test_router_in_host_app_hides_only_its_routes(installed, manual_clock):
    provider, in_process = installed
    host = FastAPI()

    @host.get("/items/{item_id}")
    def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    host.include_router(
        create_velocity_router(settings=ServiceSettings(), clock=manual_clock), prefix="/admin"
    )
    FastAPIInstrumentor.instrument_app(host, tracer_provider=provider)

    with serve_app(host) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
        assert client.get("/no-such-page").status_code == 404
        assert client.get("/admin/velocity").status_code == 200
        assert client.get("/admin/static/velocity.css").status_code == 200
        assert client.get("/admin/ops/velocity").status_code == 200
        body = client.get("/admin/ops/velocity").json()

    assert (OWN_SERVICE, "GET /admin/ops/velocity") in in_process_keys(in_process)
    rows = {row["key"]: row for row in body["rows"]}
    # The host app's own unrouted requests stay: only the router's routes are left out.
    assert set(rows) == {"GET /items/{item_id}", "GET (unmatched)"}
    assert rows["GET /items/{item_id}"]["count"] == 2
    assert body["services"] == [OWN_SERVICE]


def test_router_without_install_is_503(monkeypatch, manual_clock):
    monkeypatch.setattr(install_module, "_registry", None)
    host = FastAPI()
    host.include_router(create_velocity_router(settings=ServiceSettings(), clock=manual_clock))

    with serve_app(host) as base_url:
        response = httpx.get(f"{base_url}/ops/velocity")

    assert response.status_code == 503
    assert "otel_velocity.install()" in response.json()["detail"]
