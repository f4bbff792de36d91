"""``VELOCITY_TOKEN`` and ``VELOCITY_CORS_ORIGINS``."""

from __future__ import annotations

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.sdk.trace.export import SpanExportResult
from otel_velocity_service import ServiceSettings

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(start_service):
    return start_service(ServiceSettings.from_env({"VELOCITY_TOKEN": TOKEN}))


@pytest.mark.parametrize("path", ["/ops/velocity", "/ops/sentry-link?route=GET%20/a"])
def test_ops_without_token_is_401(guarded, path):
    response = httpx.get(guarded.url(path))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"])
def test_ops_with_wrong_token_is_401(guarded, header):
    response = httpx.get(guarded.url("/ops/velocity"), headers={"Authorization": header})

    assert response.status_code == 401


def test_ops_with_token_is_200(guarded):
    response = httpx.get(guarded.url("/ops/velocity"), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200


def test_traces_without_token_is_401(guarded, server_spans):
    server_spans.add("/a")

    response = httpx.post(
        guarded.url("/v1/traces"),
        content=server_spans.protobuf_body(),
        headers={"Content-Type": "application/x-protobuf"},
    )

    assert response.status_code == 401
    assert "VELOCITY_TOKEN" in Status.FromString(response.content).message
    assert guarded.registry.rows() == []


def test_exporter_with_token_header_is_counted(guarded, server_spans):
    server_spans.add("/a")

    result = server_spans.export(guarded.base_url, headers={"Authorization": f"Bearer {TOKEN}"})

    assert result is SpanExportResult.SUCCESS
    assert len(guarded.registry.rows()) == 1


def test_exporter_without_token_fails(guarded, server_spans):
    server_spans.add("/a")

    assert server_spans.export(guarded.base_url) is SpanExportResult.FAILURE


@pytest.mark.parametrize("path", ["/velocity", "/static/velocity.js", "/healthz"])
def test_page_and_health_need_no_token(guarded, path):
    assert httpx.get(guarded.url(path)).status_code == 200


def test_cors_off_by_default(service):
    response = httpx.get(service.url("/ops/velocity"), headers={"Origin": "https://ops.example"})

    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origin(start_service):
    service = start_service(
        ServiceSettings.from_env(
            {"VELOCITY_CORS_ORIGINS": "https://ops.example, https://b.example"}
        )
    )

    preflight = httpx.options(
        service.url("/ops/velocity"),
        headers={
            "Origin": "https://ops.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    other = httpx.get(service.url("/ops/velocity"), headers={"Origin": "https://evil.example"})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://ops.example"
    assert "access-control-allow-origin" not in other.headers
