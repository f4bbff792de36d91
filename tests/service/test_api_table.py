"""``GET /ops/velocity``: the JSON contract, exact windows, sorting, filtering and paging."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from otel_velocity_service import ServiceSettings
from otel_velocity_service.links import SentryLinkSettings

from otel_velocity import WindowSettings

TOP_LEVEL_KEYS = {
    "generated_at_s",
    "window_s",
    "sentry",
    "services",
    "total",
    "offset",
    "limit",
    "overflow",
    "rows",
}
ROW_KEYS = {
    "service",
    "method",
    "route",
    "key",
    "rps",
    "rps_5m",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "p95_5m_ms",
    "err_rate",
    "err_rate_5m",
    "count",
    "errors",
    "count_5m",
    "baseline_p95_ms",
    "regress_pct",
    "is_regress",
    "trend",
    "exemplars",
    "links",
}
EXEMPLAR_KEYS = {
    "trace_id",
    "span_id",
    "duration_ms",
    "status_code",
    "kind",
    "time_s",
    "trace_url",
}
SENTRY = SentryLinkSettings(org="acme", project_id=12, project_ids_by_service={"catalog": 13})


def keys_in_order(body):
    return [row["key"] for row in body["rows"]]


@pytest.fixture
def four_routes(service, server_spans):
    """Rows with p95 of 10, 30 and 20 ms, and one with no request in the short window."""
    server_spans.add("/idle")
    server_spans.export(service.base_url)
    server_spans.clear()
    service.clock.advance(70.0)

    for route, duration_ms, copies in (("/a", 10.0, 1), ("/b", 30.0, 3), ("/c", 20.0, 2)):
        for _ in range(copies):
            server_spans.add(route, duration_ms=duration_ms)
    server_spans.export(service.base_url)
    return service


# --- Contract ------------------------------------------------------------------------------


def test_table_has_exact_contract_keys(service, server_spans):
    server_spans.add("/items/{item_id}", status_code=500)
    server_spans.export(service.base_url)

    body = service.table()

    assert set(body) == TOP_LEVEL_KEYS
    assert set(body["sentry"]) == {"enabled", "reason"}
    assert set(body["overflow"]) == {"routes", "spans", "services"}
    row = body["rows"][0]
    assert set(row) == ROW_KEYS
    assert set(row["trend"][0]) == {"time_s", "rps", "p95_ms", "err_rate"}
    assert set(row["exemplars"][0]) == EXEMPLAR_KEYS


def test_table_row_values(service, server_spans):
    server_spans.add("/items/{item_id}", duration_ms=12.0)
    server_spans.add("/items/{item_id}", duration_ms=12.0, status_code=503)
    server_spans.export(service.base_url)
    service.clock.advance(4.0)

    body = service.table()

    assert body["generated_at_s"] == service.clock.now_s
    assert body["window_s"] == 60.0
    assert body["total"] == 1
    assert body["offset"] == 0
    assert body["limit"] == 100
    row = body["rows"][0]
    assert row["service"] == "shop"
    assert row["method"] == "GET"
    assert row["route"] == "/items/{item_id}"
    assert row["key"] == "GET /items/{item_id}"
    assert row["count"] == 2
    assert row["errors"] == 1
    assert row["err_rate"] == 0.5
    assert row["rps"] == pytest.approx(2 / 4.0)
    assert row["p95_ms"] == pytest.approx(12.0, rel=0.01)
    assert row["baseline_p95_ms"] is None
    assert row["regress_pct"] is None
    assert row["is_regress"] is False


def test_table_trend_has_one_point_per_bucket(service, server_spans):
    server_spans.add("/items/{item_id}")
    server_spans.export(service.base_url)
    service.clock.advance(25.0)
    server_spans.clear()
    server_spans.add("/items/{item_id}", status_code=500)
    server_spans.export(service.base_url)

    trend = service.rows()["shop", "GET /items/{item_id}"]["trend"]

    assert [point["time_s"] for point in trend] == [
        service.clock.now_s - 25.0,
        service.clock.now_s - 15.0,
        service.clock.now_s - 5.0,
    ]
    assert [point["err_rate"] for point in trend] == [0.0, 0.0, 1.0]
    assert trend[1]["p95_ms"] is None


def test_table_shows_regression_against_baseline(start_service, server_spans):
    service = start_service(window=WindowSettings(min_samples=5))
    for _ in range(10):
        server_spans.add("/orders", duration_ms=10.0)
    server_spans.export(service.base_url)
    server_spans.clear()

    # 70 s later the first bucket has left the 60 s short window for the baseline.
    service.clock.advance(70.0)
    for _ in range(10):
        server_spans.add("/orders", duration_ms=100.0)
    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /orders"]
    assert row["count"] == 10
    assert row["count_5m"] == 20
    assert row["baseline_p95_ms"] == pytest.approx(10.0, rel=0.01)
    assert row["p95_ms"] == pytest.approx(100.0, rel=0.01)
    assert row["regress_pct"] == pytest.approx(900.0, rel=0.03)
    assert row["is_regress"] is True


def test_table_no_regression_below_min_samples(start_service, server_spans):
    service = start_service(window=WindowSettings(min_samples=50))
    for _ in range(10):
        server_spans.add("/orders", duration_ms=10.0)
    server_spans.export(service.base_url)
    server_spans.clear()
    service.clock.advance(70.0)
    for _ in range(10):
        server_spans.add("/orders", duration_ms=100.0)
    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /orders"]
    assert row["regress_pct"] == pytest.approx(900.0, rel=0.03)
    assert row["is_regress"] is False


def test_table_overflow_counts(start_service, server_spans):
    service = start_service(max_routes=2, max_services=1)
    for route in ("/a", "/b", "/c", "/d"):
        server_spans.add(route)
    server_spans.add("/a", service="billing")
    server_spans.export(service.base_url)

    body = service.table()

    assert body["overflow"] == {"routes": 2, "spans": 2, "services": 1}
    assert ("shop", "* (overflow)") in {(row["service"], row["key"]) for row in body["rows"]}
    assert body["services"] == ["(other services)", "shop"]


# --- Sorting, filtering, paging ------------------------------------------------------------


def test_table_default_sort_is_p95_descending(four_routes):
    assert keys_in_order(four_routes.table()) == ["GET /b", "GET /c", "GET /a", "GET /idle"]


def test_table_sort_ascending_puts_nulls_last(four_routes):
    body = four_routes.table(sort="p95_ms", order="asc")

    assert keys_in_order(body) == ["GET /a", "GET /c", "GET /b", "GET /idle"]
    assert body["rows"][-1]["p95_ms"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sort": "count"}, ["GET /b", "GET /c", "GET /a", "GET /idle"]),
        ({"sort": "count_5m", "order": "asc"}, ["GET /a", "GET /idle", "GET /c", "GET /b"]),
        ({"sort": "route"}, ["GET /a", "GET /b", "GET /c", "GET /idle"]),
        ({"sort": "key", "order": "desc"}, ["GET /idle", "GET /c", "GET /b", "GET /a"]),
        ({"sort": "rps"}, ["GET /b", "GET /c", "GET /a", "GET /idle"]),
    ],
)
def test_table_sort_columns(four_routes, params, expected):
    assert keys_in_order(four_routes.table(**params)) == expected


def test_table_ties_sorted_by_key_then_service(service, server_spans):
    for name in ("web", "api"):
        server_spans.add("/same", service=name)
        server_spans.add("/other", service=name)
    server_spans.export(service.base_url)

    body = service.table(sort="count")

    order = [(row["key"], row["service"]) for row in body["rows"]]
    assert order == [
        ("GET /other", "api"),
        ("GET /other", "web"),
        ("GET /same", "api"),
        ("GET /same", "web"),
    ]


def test_table_limit_and_offset(four_routes):
    body = four_routes.table(limit=2, offset=1)

    assert body["total"] == 4
    assert body["limit"] == 2
    assert body["offset"] == 1
    assert keys_in_order(body) == ["GET /c", "GET /a"]


def test_table_offset_past_end_is_empty(four_routes):
    body = four_routes.table(offset=10)

    assert body["total"] == 4
    assert body["rows"] == []


def test_table_filter_by_service(service, server_spans):
    server_spans.add("/a", service="shop")
    server_spans.add("/b", service="catalog")
    server_spans.add("/c", service="catalog")
    server_spans.export(service.base_url)

    body = service.table(service="catalog")

    assert body["total"] == 2
    assert {row["service"] for row in body["rows"]} == {"catalog"}
    assert body["services"] == ["catalog", "shop"]


def test_table_filter_by_unknown_service_is_empty(service, server_spans):
    server_spans.add("/a")
    server_spans.export(service.base_url)

    body = service.table(service="nope")

    assert body["total"] == 0
    assert body["rows"] == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"sort": "bogus"}, "sort"),
        ({"sort": "is_regress"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
def test_table_invalid_parameter_is_422(service, params, parameter):
    response = httpx.get(service.url("/ops/velocity"), params=params)

    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["query", parameter] in locations


# --- Sentry --------------------------------------------------------------------------------


def test_table_without_sentry_says_which_variable(start_service, server_spans):
    service = start_service(ServiceSettings.from_env({}))
    server_spans.add("/a", status_code=500)
    server_spans.export(service.base_url)

    body = service.table()

    assert body["sentry"]["enabled"] is False
    assert "SENTRY_ORG" in body["sentry"]["reason"]
    assert body["rows"][0]["links"] is None
    assert body["rows"][0]["exemplars"][0]["trace_url"] is None


def test_table_with_sentry_links_per_service_project(start_service, server_spans):
    service = start_service(ServiceSettings(sentry_links=SENTRY))
    span = server_spans.add("/items/{item_id}", status_code=500)
    server_spans.add("/items/{item_id}", service="catalog")
    server_spans.export(service.base_url)

    body = service.table()
    rows = {(row["service"], row["key"]): row for row in body["rows"]}

    assert body["sentry"] == {"enabled": True, "reason": None}
    shop_links = rows["shop", "GET /items/{item_id}"]["links"]
    errors = urlsplit(shop_links["errors"])
    assert errors.netloc == "acme.sentry.io"
    assert errors.path == "/issues/"
    assert parse_qs(errors.query)["project"] == ["12"]
    assert parse_qs(errors.query)["query"] == ['route:"/items/{item_id}" method:"GET"']
    traces = urlsplit(shop_links["traces"])
    assert traces.path == "/explore/traces/"
    catalog_errors = urlsplit(rows["catalog", "GET /items/{item_id}"]["links"]["errors"])
    assert parse_qs(catalog_errors.query)["project"] == ["13"]
    trace_id = format(span.context.trace_id, "032x")
    exemplar = rows["shop", "GET /items/{item_id}"]["exemplars"][0]
    assert urlsplit(exemplar["trace_url"]).path == f"/explore/traces/trace/{trace_id}/"


def test_table_links_null_for_service_without_project(start_service, server_spans):
    sentry = SentryLinkSettings(org="acme", project_ids_by_service={"shop": 12})
    service = start_service(ServiceSettings(sentry_links=sentry))
    server_spans.add("/a", service="shop")
    server_spans.add("/a", service="billing")
    server_spans.export(service.base_url)

    rows = service.rows()

    assert rows["shop", "GET /a"]["links"] is not None
    assert rows["billing", "GET /a"]["links"] is None


def test_table_links_null_for_overflow_row(start_service, server_spans):
    service = start_service(ServiceSettings(sentry_links=SENTRY), max_routes=1)
    server_spans.add("/a")
    server_spans.add("/b")
    server_spans.export(service.base_url)

    rows = service.rows()

    assert rows["shop", "GET /a"]["links"] is not None
    assert rows["shop", "* (overflow)"]["links"] is None


def test_table_matches_response_model(service, server_spans):
    from otel_velocity_service.schema import VelocityTable

    server_spans.add("/items/{item_id}", status_code=503, duration_ms=12.0)
    server_spans.add("/items/{item_id}", duration_ms=3.0)
    server_spans.add(None)
    server_spans.export(service.base_url)

    body = service.table(limit=1000)
    table = VelocityTable.model_validate(body)

    assert table.total == 2
    assert table.model_dump(mode="json") == body
