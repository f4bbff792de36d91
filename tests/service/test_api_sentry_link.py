"""``GET /ops/sentry-link``: Sentry URLs for routes in the table, and its errors."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from otel_velocity_service import ServiceSettings
from otel_velocity_service.links import SentryLinkSettings

SENTRY = SentryLinkSettings(org="acme", project_id=12, project_ids_by_service={"catalog": 13})


@pytest.fixture
def linked_service(start_service, server_spans):
    service = start_service(ServiceSettings(sentry_links=SENTRY))
    server_spans.add("/items/{item_id}", service="shop")
    server_spans.add("/users/{user_id}/orders", service="catalog")
    server_spans.add("/health", service="shop")
    server_spans.add("/health", service="catalog")
    server_spans.export(service.base_url)
    return service


def sentry_link(running, **params):
    return httpx.get(running.url("/ops/sentry-link"), params=params, timeout=10)


def test_link_for_known_route_defaults_to_errors(linked_service):
    response = sentry_link(linked_service, route="GET /items/{item_id}", service="shop")

    assert response.status_code == 200
    url = urlsplit(response.json()["url"])
    assert url.netloc == "acme.sentry.io"
    assert url.path == "/issues/"
    query = parse_qs(url.query)
    assert query["project"] == ["12"]
    assert query["query"] == ['route:"/items/{item_id}" method:"GET"']


def test_link_traces_kind(linked_service):
    response = sentry_link(
        linked_service, route="GET /items/{item_id}", service="shop", kind="traces"
    )

    assert response.status_code == 200
    url = urlsplit(response.json()["url"])
    assert url.path == "/explore/traces/"
    assert parse_qs(url.query)["query"] == ['transaction:"GET /items/{item_id}"']


def test_link_uses_service_project(linked_service):
    response = sentry_link(linked_service, route="GET /users/{user_id}/orders", service="catalog")

    assert parse_qs(urlsplit(response.json()["url"]).query)["project"] == ["13"]


def test_link_without_service_finds_single_owner(linked_service):
    response = sentry_link(linked_service, route="GET /users/{user_id}/orders")

    assert response.status_code == 200
    assert parse_qs(urlsplit(response.json()["url"]).query)["project"] == ["13"]


def test_link_without_service_ambiguous_is_400(linked_service):
    response = sentry_link(linked_service, route="GET /health")

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "['catalog', 'shop']" in detail
    assert "'service'" in detail


def test_link_unknown_route_is_404(linked_service):
    response = sentry_link(linked_service, route="GET /nope", service="shop")

    assert response.status_code == 404
    assert "'GET /nope' is not in the table of service 'shop'" in response.json()["detail"]


def test_link_route_of_other_service_is_404(linked_service):
    response = sentry_link(linked_service, route="GET /items/{item_id}", service="catalog")

    assert response.status_code == 404


def test_link_unknown_service_is_404(linked_service):
    response = sentry_link(linked_service, route="GET /items/{item_id}", service="ghost")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "missing query parameter 'route'"),
        ({"route": "  "}, "missing query parameter 'route'"),
        ({"route": "GET"}, "invalid query parameter 'route'"),
        ({"route": "GET /items/{item_id}", "kind": "issues"}, "invalid query parameter 'kind'"),
    ],
)
def test_link_invalid_parameter_is_400(linked_service, params, expected):
    response = sentry_link(linked_service, **params)

    assert response.status_code == 400
    assert expected in response.json()["detail"]


def test_link_overflow_row_is_404(start_service, server_spans):
    service = start_service(ServiceSettings(sentry_links=SENTRY), max_routes=1)
    server_spans.add("/a")
    server_spans.add("/b")
    server_spans.export(service.base_url)

    response = sentry_link(service, route="* (overflow)", service="shop")

    assert response.status_code == 404
    assert "overflow row" in response.json()["detail"]


def test_link_without_sentry_org_is_503(start_service, server_spans):
    service = start_service(ServiceSettings.from_env({"SENTRY_PROJECT_ID": "12"}))
    server_spans.add("/items/{item_id}")
    server_spans.export(service.base_url)

    response = sentry_link(service, route="GET /items/{item_id}", service="shop")

    assert response.status_code == 503
    assert "SENTRY_ORG" in response.json()["detail"]


def test_link_service_without_project_is_503(start_service, server_spans):
    sentry = SentryLinkSettings(org="acme", project_ids_by_service={"shop": 12})
    service = start_service(ServiceSettings(sentry_links=sentry))
    server_spans.add("/a", service="billing")
    server_spans.export(service.base_url)

    response = sentry_link(service, route="GET /a", service="billing")

    assert response.status_code == 503
    assert "VELOCITY_SENTRY_PROJECTS" in response.json()["detail"]
