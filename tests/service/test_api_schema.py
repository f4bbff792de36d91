"""The OpenAPI schema, the page files and the health check."""

from __future__ import annotations

import httpx
import pytest
from test_api_table import EXEMPLAR_KEYS, ROW_KEYS, TOP_LEVEL_KEYS

ENDPOINTS = {
    ("post", "/v1/traces"),
    ("get", "/ops/velocity"),
    ("get", "/ops/sentry-link"),
    ("get", "/velocity"),
    ("get", "/static/{filename}"),
    ("get", "/healthz"),
}


@pytest.fixture
def openapi(service):
    response = httpx.get(service.url("/openapi.json"))
    assert response.status_code == 200
    return response.json()


def response_schema(openapi, method, path, status="200", media_type="application/json"):
    return openapi["paths"][path][method]["responses"][status]["content"][media_type]["schema"]


def test_openapi_lists_every_endpoint(openapi):
    listed = {(method, path) for path, item in openapi["paths"].items() for method in item}

    assert listed == ENDPOINTS


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("get", "/ops/velocity", "VelocityTable"),
        ("get", "/ops/sentry-link", "SentryLinkResult"),
        ("get", "/healthz", "Health"),
        ("post", "/v1/traces", "OtlpExportResult"),
    ],
)
def test_openapi_json_endpoints_have_models(openapi, method, path, model):
    assert response_schema(openapi, method, path) == {"$ref": f"#/components/schemas/{model}"}


@pytest.mark.parametrize(
    ("path", "method", "status", "model"),
    [
        ("/v1/traces", "post", "400", "OtlpStatus"),
        ("/v1/traces", "post", "413", "OtlpStatus"),
        ("/v1/traces", "post", "415", "OtlpStatus"),
        ("/ops/sentry-link", "get", "404", "ErrorBody"),
        ("/ops/sentry-link", "get", "503", "ErrorBody"),
        ("/ops/velocity", "get", "401", "ErrorBody"),
    ],
)
def test_openapi_error_responses_have_models(openapi, path, method, status, model):
    schema = response_schema(openapi, method, path, status)

    assert schema == {"$ref": f"#/components/schemas/{model}"}


def test_openapi_traces_accepts_both_encodings(openapi):
    operation = openapi["paths"]["/v1/traces"]["post"]

    assert set(operation["requestBody"]["content"]) == {
        "application/x-protobuf",
        "application/json",
    }
    assert "application/x-protobuf" in operation["responses"]["200"]["content"]


def test_openapi_models_match_contract(openapi):
    schemas = openapi["components"]["schemas"]

    assert set(schemas["VelocityTable"]["properties"]) == TOP_LEVEL_KEYS
    assert set(schemas["TableRow"]["properties"]) == ROW_KEYS
    assert set(schemas["ExemplarRef"]["properties"]) == EXEMPLAR_KEYS


@pytest.mark.parametrize(
    ("model", "field", "unit"),
    [
        ("VelocityTable", "generated_at_s", "seconds"),
        ("VelocityTable", "window_s", "seconds"),
        ("TableRow", "p95_ms", "milliseconds"),
        ("TableRow", "rps", "per second"),
        ("TableRow", "err_rate", "0..1"),
        ("TableRow", "regress_pct", "percent"),
        ("TrendSample", "time_s", "seconds"),
        ("ExemplarRef", "duration_ms", "milliseconds"),
    ],
)
def test_openapi_descriptions_state_units(openapi, model, field, unit):
    description = openapi["components"]["schemas"][model]["properties"][field]["description"]

    assert unit in description


def test_openapi_sort_parameter_lists_columns(openapi):
    parameters = openapi["paths"]["/ops/velocity"]["get"]["parameters"]
    sort = next(parameter for parameter in parameters if parameter["name"] == "sort")
    enum = openapi["components"]["schemas"]["SortColumn"]["enum"]

    assert sort["schema"]["$ref"] == "#/components/schemas/SortColumn"
    assert {"p95_ms", "rps", "route", "key", "regress_pct"} <= set(enum)


def test_page_served_as_html(service):
    response = httpx.get(service.url("/velocity"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-endpoint="ops/velocity"' in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("velocity.js", "text/javascript"), ("velocity.css", "text/css")],
)
def test_page_static_files(service, name, media_type):
    response = httpx.get(service.url(f"/static/{name}"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", "%2E%2E"])
def test_page_unknown_static_file_is_404(service, name):
    response = httpx.get(service.url(f"/static/{name}"))

    assert response.status_code == 404


def test_healthz(service):
    response = httpx.get(service.url("/healthz"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
