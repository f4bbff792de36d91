"""The SDK's OTLP/HTTP protobuf exporter against the real service under uvicorn.

The registry's clock is a ``ManualClock``, so the counts and rates read here are exact.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

SHORT_WINDOW_S = 60.0


def test_export_counts_each_route_exactly(service, server_spans):
    for _ in range(3):
        server_spans.add("/items/{item_id}")
    server_spans.add("/users/{user_id}/orders", duration_ms=40.0)
    server_spans.add("/cart/{cart_id}/checkout", method="POST")

    assert server_spans.export(service.base_url) is SpanExportResult.SUCCESS

    service.clock.advance(5.0)
    rows = service.rows()
    assert set(rows) == {
        ("shop", "GET /items/{item_id}"),
        ("shop", "GET /users/{user_id}/orders"),
        ("shop", "POST /cart/{cart_id}/checkout"),
    }
    items = rows["shop", "GET /items/{item_id}"]
    assert items["count"] == 3
    assert items["count_5m"] == 3
    assert items["errors"] == 0
    assert items["rps"] == pytest.approx(3 / 5.0)
    assert rows["shop", "GET /users/{user_id}/orders"]["count"] == 1
    assert rows["shop", "POST /cart/{cart_id}/checkout"]["method"] == "POST"


def test_export_duration_from_span_timestamps(service, server_spans):
    server_spans.add("/slow", duration_ms=250.0)

    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /slow"]
    # The latency sketch returns quantiles within 1% of the exact value.
    assert row["p50_ms"] == pytest.approx(250.0, rel=0.01)
    assert row["p99_ms"] == pytest.approx(250.0, rel=0.01)


def test_export_separates_services(service, server_spans):
    server_spans.add("/items/{item_id}", service="shop")
    server_spans.add("/items/{item_id}", service="shop")
    server_spans.add("/items/{item_id}", service="catalog")

    server_spans.export(service.base_url)

    body = service.table()
    rows = service.rows()
    assert body["services"] == ["catalog", "shop"]
    assert rows["shop", "GET /items/{item_id}"]["count"] == 2
    assert rows["catalog", "GET /items/{item_id}"]["count"] == 1


def test_export_counts_5xx_as_errors_not_4xx(service, server_spans):
    for status_code in (200, 404, 429, 500, 503):
        server_spans.add("/orders/{order_id}", status_code=status_code)

    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /orders/{order_id}"]
    assert row["count"] == 5
    assert row["errors"] == 2
    assert row["err_rate"] == pytest.approx(2 / 5)
    error_statuses = sorted(e["status_code"] for e in row["exemplars"] if e["kind"] == "error")
    assert error_statuses == [500, 503]


def test_export_span_status_error_without_http_status(service, server_spans):
    server_spans.add("/jobs", status_code=None, span_error=True)
    server_spans.add("/jobs", status_code=None, span_error=False)

    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /jobs"]
    assert row["count"] == 2
    assert row["errors"] == 1


def test_export_http_status_wins_over_span_status(service, server_spans):
    # The FastAPI instrumentation leaves a 4xx span's status unset, but other SDKs may set
    # ERROR; a 4xx is still the client's error.
    server_spans.add("/login", status_code=401, span_error=True)

    server_spans.export(service.base_url)

    assert service.rows()["shop", "GET /login"]["errors"] == 0


def test_export_folds_unrouted_spans_per_method(service, server_spans):
    server_spans.add(None, status_code=404)
    server_spans.add(None, status_code=404)
    server_spans.add(None, method="POST", status_code=404)

    server_spans.export(service.base_url)

    rows = service.rows()
    assert set(rows) == {("shop", "GET (unmatched)"), ("shop", "POST (unmatched)")}
    assert rows["shop", "GET (unmatched)"]["count"] == 2
    assert rows["shop", "GET (unmatched)"]["route"] == "(unmatched)"


def test_export_reads_stable_http_conventions(service, server_spans):
    server_spans.add("/items/{item_id}", stable_conventions=True, status_code=200)
    server_spans.add("/items/{item_id}", stable_conventions=True, status_code=502)
    server_spans.add("/items/{item_id}", stable_conventions=False, status_code=200)

    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /items/{item_id}"]
    assert row["count"] == 3
    assert row["errors"] == 1


@pytest.mark.parametrize(
    "kind", [SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER]
)
def test_export_ignores_non_server_spans(service, server_spans, kind):
    server_spans.add("/items/{item_id}", kind=kind)
    server_spans.add("/items/{item_id}", kind=SpanKind.SERVER)

    server_spans.export(service.base_url)

    assert service.rows()["shop", "GET /items/{item_id}"]["count"] == 1


def test_export_only_non_server_spans_leaves_table_empty(service, server_spans):
    server_spans.add("/items/{item_id}", kind=SpanKind.CLIENT)

    assert server_spans.export(service.base_url) is SpanExportResult.SUCCESS

    body = service.table()
    assert body["rows"] == []
    assert body["services"] == []


def test_export_exemplar_ids_match_sdk_span(service, server_spans):
    span = server_spans.add("/checkout", status_code=500, duration_ms=80.0)

    server_spans.export(service.base_url)

    exemplars = service.rows()["shop", "GET /checkout"]["exemplars"]
    error = next(e for e in exemplars if e["kind"] == "error")
    assert error["trace_id"] == format(span.context.trace_id, "032x")
    assert error["span_id"] == format(span.context.span_id, "016x")
    assert error["status_code"] == 500
    assert error["duration_ms"] == pytest.approx(80.0)
    assert error["time_s"] == service.clock.now_s


def test_export_windows_follow_injected_clock(service, server_spans):
    server_spans.add("/items/{item_id}")
    server_spans.export(service.base_url)
    server_spans.clear()

    service.clock.advance(SHORT_WINDOW_S + 10.0)
    server_spans.add("/items/{item_id}")
    server_spans.add("/items/{item_id}")
    server_spans.export(service.base_url)

    row = service.rows()["shop", "GET /items/{item_id}"]
    assert row["count"] == 2
    assert row["count_5m"] == 3
