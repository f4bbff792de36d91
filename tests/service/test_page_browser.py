"""Browser tests of the velocity page in headless Chromium.

The page files are the real ones from service/otel_velocity_service/static.
The data comes from the stand-in endpoint in page_fixtures.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from page_fixtures import REPO_ROOT, VelocityServer, make_payload, make_row
from playwright.sync_api import expect

# A short refresh interval keeps the refresh tests fast. The page's default is 5 s.
REFRESH_QUERY = "refresh_ms=200"
SCREENSHOT_PATH = REPO_ROOT / "docs" / "velocity-page.png"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_URL = f"https://acme.sentry.io/explore/traces/trace/{TRACE_ID}/"
UNLINKED_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

ROW_SELECTOR = "#velocity-rows tr"
ROUTE_SELECTOR = "#velocity-rows .route-template"


def _open(
    page: Any, server: VelocityServer, query: str = REFRESH_QUERY, fragment: str = ""
) -> None:
    page.goto(server.page_url(query, fragment))


def _row(page: Any, route: str) -> Any:
    return page.locator(ROW_SELECTOR, has=page.locator(".route-template", has_text=route))


def _route_texts(page: Any) -> list[str]:
    return page.locator(ROUTE_SELECTOR).all_text_contents()


def _trend(p95_values: list[float], rps_values: list[float]) -> list[dict[str, Any]]:
    """Return one trend point per minute, ending at the payload's time."""
    end_s = 1733340000.0
    count = len(p95_values)
    return [
        {
            "time_s": end_s - 60.0 * (count - index),
            "rps": rps,
            "p95_ms": p95,
            "err_rate": 0.0,
        }
        for index, (p95, rps) in enumerate(zip(p95_values, rps_values, strict=True))
    ]


def _sample_rows() -> list[dict[str, Any]]:
    return [
        make_row(
            "shop",
            "GET",
            "/items/{item_id}",
            trend=_trend([29.0, 30.5, 31.0, 36.0, 40.2], [9.1, 9.6, 10.2, 10.0, 10.5]),
            p95_ms=40.2,
            baseline_p95_ms=30.0,
            regress_pct=34.0,
            is_regress=True,
            exemplars=[
                {
                    "trace_id": TRACE_ID,
                    "span_id": "00f067aa0ba902b7",
                    "duration_ms": 812.0,
                    "status_code": 503,
                    "kind": "error",
                    "time_s": 1733339990.0,
                    "trace_url": TRACE_URL,
                },
                {
                    "trace_id": UNLINKED_TRACE_ID,
                    "span_id": "b" * 16,
                    "duration_ms": 95.0,
                    "status_code": 200,
                    "kind": "slow",
                    "time_s": 1733339980.0,
                    "trace_url": None,
                },
            ],
        ),
        make_row(
            "shop",
            "POST",
            "/cart",
            trend=_trend([118.0, 121.0, 119.5, 122.0, 120.5], [2.9, 2.7, 2.4, 2.6, 2.5]),
            p95_ms=120.5,
            err_rate=0.12,
            errors=72,
            rps=2.5,
        ),
        make_row(
            "billing",
            "GET",
            "/invoices",
            trend=_trend([16.0, 15.2, 14.8, 15.5, 15.0], [1.2, 2.0, 2.8, 3.1, 3.25]),
            rps=3.25,
            p50_ms=4.5,
            p95_ms=15.0,
            p99_ms=1250.0,
            err_rate=0.0,
            errors=0,
            count=1234,
            regress_pct=-3.0,
        ),
    ]


def test_page_shows_formatted_rows(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload(_sample_rows()))

    _open(browser_page, velocity_server)

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(3)
    items = _row(browser_page, "/items/{item_id}")
    expect(items.locator(".method")).to_have_text("GET")
    expect(items.locator(".service-name")).to_have_text("shop")
    expect(items.locator(".col-rps")).to_have_text("10.5")
    expect(items.locator(".col-p50")).to_have_text("12.1 ms")
    expect(items.locator(".col-p95")).to_have_text("40.2 ms")
    expect(items.locator(".col-p99")).to_have_text("80.0 ms")
    expect(items.locator(".col-errors")).to_have_text("2.0%")
    expect(items.locator(".col-count")).to_have_text("600")
    expect(items.locator(".col-regress")).to_have_text("+34.0%")
    expect(items.locator(".col-regress")).to_have_attribute("title", "baseline p95: 30.0 ms")

    invoices = _row(browser_page, "/invoices")
    expect(invoices.locator(".col-rps")).to_have_text("3.25")
    expect(invoices.locator(".col-p50")).to_have_text("4.50 ms")
    expect(invoices.locator(".col-p99")).to_have_text("1.25 s")
    expect(invoices.locator(".col-errors")).to_have_text("0.0%")
    expect(invoices.locator(".col-count")).to_have_text("1,234")
    expect(invoices.locator(".col-regress")).to_have_text("-3.0%")

    for column in (".col-p95-spark", ".col-rps-spark"):
        expect(items.locator(f"{column} svg polyline")).to_have_count(1)
        expect(items.locator(f"{column} svg")).to_have_attribute("role", "img")
    expect(browser_page.locator("#status")).to_contain_text("3 routes")


def test_null_values_render_as_dash(browser_page: Any, velocity_server: VelocityServer) -> None:
    row = make_row(
        "shop",
        "GET",
        "/quiet",
        p50_ms=None,
        p95_ms=None,
        p99_ms=None,
        p95_5m_ms=None,
        baseline_p95_ms=None,
        regress_pct=None,
        trend=[],
        links=None,
    )
    velocity_server.stub.set_payload(make_payload([row]))

    _open(browser_page, velocity_server)

    quiet = _row(browser_page, "/quiet")
    for column in (".col-p50", ".col-p95", ".col-p99", ".col-regress", ".col-p95-spark"):
        expect(quiet.locator(column)).to_have_text("—")
    expect(quiet.locator(".sentry-button")).to_have_count(0)


def test_p95_header_sorts_both_ways(browser_page: Any, velocity_server: VelocityServer) -> None:
    rows = [
        make_row("shop", "GET", "/ten", p95_ms=10.0, rps=40.0),
        make_row("shop", "GET", "/thirty", p95_ms=30.0, rps=30.0),
        make_row("shop", "GET", "/none", p95_ms=None, rps=20.0),
        make_row("shop", "GET", "/twenty", p95_ms=20.0, rps=10.0),
    ]
    velocity_server.stub.set_payload(make_payload(rows))
    _open(browser_page, velocity_server)
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(4)
    p95_header = browser_page.locator("th[data-sort='p95_ms']")

    p95_header.locator("button").click()

    expect(p95_header).to_have_attribute("aria-sort", "descending")
    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(
        ["/thirty", "/twenty", "/ten", "/none"]
    )

    p95_header.locator("button").click()

    expect(p95_header).to_have_attribute("aria-sort", "ascending")
    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(
        ["/ten", "/twenty", "/thirty", "/none"]
    )
    expect(browser_page.locator("th[data-sort='rps']")).not_to_have_attribute(
        "aria-sort", "descending"
    )
    assert "sort=p95_ms" in browser_page.url
    assert "order=asc" in browser_page.url


def test_bad_rows_are_red(browser_page: Any, velocity_server: VelocityServer) -> None:
    rows = [
        make_row("shop", "GET", "/regressing", is_regress=True, regress_pct=40.0, err_rate=0.0),
        make_row("shop", "GET", "/failing", err_rate=0.06, is_regress=False),
        make_row("shop", "GET", "/at-threshold", err_rate=0.05, is_regress=False),
        make_row("shop", "GET", "/healthy", err_rate=0.001, is_regress=False),
    ]
    velocity_server.stub.set_payload(make_payload(rows))

    _open(browser_page, velocity_server)

    expect(browser_page.locator("#error-threshold")).to_have_text("5.0%")
    expect(_row(browser_page, "/regressing")).to_have_class("row-bad row-regress")
    expect(_row(browser_page, "/failing")).to_have_class("row-bad row-errors")
    expect(_row(browser_page, "/at-threshold")).to_have_class("")
    expect(_row(browser_page, "/healthy")).to_have_class("")
    healthy_background = (
        _row(browser_page, "/healthy")
        .locator("td")
        .first.evaluate("cell => getComputedStyle(cell).backgroundColor")
    )
    failing_background = (
        _row(browser_page, "/failing")
        .locator("td")
        .first.evaluate("cell => getComputedStyle(cell).backgroundColor")
    )
    assert healthy_background != failing_background


def test_error_threshold_query_parameter(
    browser_page: Any, velocity_server: VelocityServer
) -> None:
    rows = [make_row("shop", "GET", "/failing", err_rate=0.06, is_regress=False)]
    velocity_server.stub.set_payload(make_payload(rows))

    _open(browser_page, velocity_server, query=f"{REFRESH_QUERY}&error_threshold=0.1")

    expect(browser_page.locator("#error-threshold")).to_have_text("10.0%")
    expect(_row(browser_page, "/failing")).to_have_class("")


def test_sentry_button_opens_errors_link(
    browser_page: Any, velocity_server: VelocityServer
) -> None:
    rows = _sample_rows()
    velocity_server.stub.set_payload(make_payload(rows))

    _open(browser_page, velocity_server)

    for row in rows:
        button = _row(browser_page, row["route"]).locator("a.sentry-button")
        expect(button).to_have_text("Sentry →")
        expect(button).to_have_attribute("href", row["links"]["errors"])
        expect(button).to_have_attribute("target", "_blank")
        rel = button.get_attribute("rel") or ""
        assert "noopener" in rel.split()
        assert "noreferrer" in rel.split()
        traces = _row(browser_page, row["route"]).locator("a.traces-link")
        expect(traces).to_have_attribute("href", row["links"]["traces"])


def test_exemplar_links_to_trace_url(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload(_sample_rows()))

    _open(browser_page, velocity_server)

    link = browser_page.locator(f"a.trace-link[data-trace-id='{TRACE_ID}']")
    expect(link).to_have_text(TRACE_ID[:8])
    expect(link).to_have_attribute("href", TRACE_URL)
    expect(link).to_have_attribute("target", "_blank")
    assert "noopener" in (link.get_attribute("rel") or "").split()
    expect(link).to_have_attribute("title", f"trace {TRACE_ID} · error · 812 ms · 503")
    unlinked = browser_page.locator(f"[data-trace-id='{UNLINKED_TRACE_ID}']")
    expect(unlinked).to_have_count(1)
    assert unlinked.evaluate("element => element.tagName") == "CODE"


def test_unsafe_link_scheme_not_rendered(
    browser_page: Any, velocity_server: VelocityServer
) -> None:
    row = make_row(
        "shop",
        "GET",
        "/x",
        links={"errors": "javascript:alert(1)", "traces": "data:text/html,hi"},
        exemplars=[
            {
                "trace_id": TRACE_ID,
                "span_id": "b" * 16,
                "duration_ms": 1.0,
                "status_code": 500,
                "kind": "error",
                "time_s": 1.0,
                "trace_url": "javascript:alert(2)",
            }
        ],
    )
    velocity_server.stub.set_payload(make_payload([row]))

    _open(browser_page, velocity_server)

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(1)
    expect(browser_page.locator("#velocity-rows a")).to_have_count(0)


def test_refresh_keeps_sort_and_scroll(browser_page: Any, velocity_server: VelocityServer) -> None:
    rows = [
        make_row("shop", "GET", f"/route-{index:02d}", p95_ms=100.0 + index, rps=1.0)
        for index in range(60)
    ]
    velocity_server.stub.set_payload(make_payload(rows))
    _open(browser_page, velocity_server)
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(60)
    browser_page.locator("th[data-sort='p95_ms'] button").click()
    expect(browser_page.locator(ROUTE_SELECTOR).first).to_have_text("/route-59")
    browser_page.evaluate("window.scrollTo(0, 600)")
    browser_page.wait_for_function("window.scrollY === 600")
    # Mark an existing row node: a rebuilt table would lose the mark.
    browser_page.locator(ROW_SELECTOR).nth(10).evaluate("row => { row.dataset.marker = 'kept'; }")

    # The new row has the lowest p95, so it sorts last in descending order.
    velocity_server.stub.set_payload(
        make_payload([*rows, make_row("shop", "GET", "/new-route", p95_ms=1.0, rps=500.0)])
    )

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(61)
    expected = [f"/route-{index:02d}" for index in range(59, -1, -1)] + ["/new-route"]
    assert _route_texts(browser_page) == expected
    expect(browser_page.locator("th[data-sort='p95_ms']")).to_have_attribute(
        "aria-sort", "descending"
    )
    assert browser_page.evaluate("window.scrollY") == 600
    expect(browser_page.locator(ROW_SELECTOR).nth(10)).to_have_attribute("data-marker", "kept")


def test_refresh_updates_values_in_place(
    browser_page: Any, velocity_server: VelocityServer
) -> None:
    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/x", p95_ms=40.2)]))
    _open(browser_page, velocity_server)
    expect(_row(browser_page, "/x").locator(".col-p95")).to_have_text("40.2 ms")
    _row(browser_page, "/x").evaluate("row => { row.dataset.marker = 'kept'; }")

    velocity_server.stub.set_payload(
        make_payload([make_row("shop", "GET", "/x", p95_ms=55.5, is_regress=True)])
    )

    expect(_row(browser_page, "/x").locator(".col-p95")).to_have_text("55.5 ms")
    expect(_row(browser_page, "/x")).to_have_class("row-bad row-regress")
    expect(_row(browser_page, "/x")).to_have_attribute("data-marker", "kept")


def test_empty_state_explains_setup(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload([]))

    _open(browser_page, velocity_server)

    empty_state = browser_page.locator("#empty-state")
    expect(empty_state).to_be_visible()
    expect(empty_state).to_contain_text(f"OTEL_EXPORTER_OTLP_ENDPOINT={velocity_server.base_url}")
    expect(empty_state).to_contain_text("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
    expect(empty_state).to_contain_text("opentelemetry-instrument")
    expect(browser_page.locator("#velocity-table")).to_be_hidden()
    expect(browser_page.locator("#status")).to_contain_text("0 routes")


def test_empty_state_leaves_once_data_arrives(
    browser_page: Any, velocity_server: VelocityServer
) -> None:
    _open(browser_page, velocity_server)
    expect(browser_page.locator("#empty-state")).to_be_visible()

    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/first")]))

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(1)
    expect(browser_page.locator("#empty-state")).to_be_hidden()
    expect(browser_page.locator("#velocity-table")).to_be_visible()


def test_sentry_off_note(browser_page: Any, velocity_server: VelocityServer) -> None:
    reason = "Sentry organization is missing: set SENTRY_ORG to your organization slug."
    rows = [make_row("shop", "GET", "/x", links=None, exemplars=[])]
    velocity_server.stub.set_payload(make_payload(rows, sentry_enabled=False, sentry_reason=reason))

    _open(browser_page, velocity_server)

    note = browser_page.locator("#sentry-note")
    expect(note).to_be_visible()
    expect(note).to_have_text(f"Sentry links are off: {reason}")
    expect(browser_page.locator("a.sentry-button")).to_have_count(0)


def test_sentry_on_hides_note(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/x")]))

    _open(browser_page, velocity_server)

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(1)
    expect(browser_page.locator("#sentry-note")).to_be_hidden()


def test_markup_in_strings_stays_text(browser_page: Any, velocity_server: VelocityServer) -> None:
    route = "<img src=x onerror=alert(1)>"
    service = "<b>svc</b>"
    row = make_row(service, "GET", route)
    row["exemplars"] = [
        {
            "trace_id": "<svg onload=alert(3)>",
            "span_id": "x",
            "duration_ms": 1.0,
            "status_code": 500,
            "kind": "<i>error</i>",
            "time_s": 1.0,
            "trace_url": None,
        }
    ]
    payload = make_payload(
        [row], sentry_enabled=False, sentry_reason="<img src=y onerror=alert(2)>"
    )
    velocity_server.stub.set_payload(payload)
    dialogs: list[str] = []
    browser_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    _open(browser_page, velocity_server)

    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(route)
    expect(browser_page.locator("#velocity-rows .service-name")).to_have_text(service)
    expect(browser_page.locator("#sentry-note")).to_contain_text("<img src=y onerror=alert(2)>")
    expect(browser_page.locator("#service-filter option[value='<b>svc</b>']")).to_have_text(service)
    assert browser_page.locator("img").count() == 0
    assert browser_page.locator("b, i, #velocity-rows svg[onload]").count() == 0
    assert dialogs == []


def test_service_filter_narrows_rows(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload(_sample_rows()))
    _open(browser_page, velocity_server)
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(3)
    expect(browser_page.locator("#service-filter option")).to_have_text(
        ["All services", "billing", "shop"]
    )

    browser_page.locator("#service-filter").select_option("billing")

    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(["/invoices"])
    assert velocity_server.stub.requests()[-1].params.get("service") == "billing"
    assert "service=billing" in browser_page.url
    expect(browser_page.locator("#service-filter")).to_have_value("billing")
    expect(browser_page.locator("#service-filter option")).to_have_count(3)

    browser_page.locator("#service-filter").select_option("")

    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(3)
    assert "service" not in velocity_server.stub.requests()[-1].params


def test_service_filter_from_address(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload(_sample_rows()))

    _open(browser_page, velocity_server, query=f"{REFRESH_QUERY}&service=shop")

    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_count(2)
    expect(browser_page.locator("#service-filter")).to_have_value("shop")
    assert velocity_server.stub.requests()[0].params.get("service") == "shop"


def test_bearer_token_from_fragment(browser_page: Any, velocity_server: VelocityServer) -> None:
    # A base64 token keeps its "+", "/" and "=" characters.
    token = "s3cret a+b/c="
    velocity_server.stub.require_token(token)
    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/private")]))

    _open(browser_page, velocity_server, fragment="token=s3cret%20a+b/c=&view=1")

    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(["/private"])
    assert velocity_server.stub.requests()[0].authorization == f"Bearer {token}"
    assert "token" not in browser_page.url
    assert urlsplit(browser_page.url).fragment == "view=1"
    expect(browser_page.locator("meta[name='referrer']")).to_have_attribute(
        "content", "no-referrer"
    )


def test_token_survives_reload(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.require_token("kept")
    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/private")]))
    _open(browser_page, velocity_server, fragment="token=kept")
    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(["/private"])

    browser_page.reload()

    expect(browser_page.locator(ROUTE_SELECTOR)).to_have_text(["/private"])
    assert velocity_server.stub.requests()[-1].authorization == "Bearer kept"
    assert "token" not in browser_page.url


def test_unauthorized_keeps_last_table(browser_page: Any, velocity_server: VelocityServer) -> None:
    velocity_server.stub.set_payload(make_payload([make_row("shop", "GET", "/x")]))
    _open(browser_page, velocity_server)
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(1)

    velocity_server.stub.require_token("needed")

    expect(browser_page.locator("#status")).to_contain_text("Not authorized (HTTP 401)")
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(1)


def test_screenshot_of_populated_page(
    browser_page: Any, velocity_server: VelocityServer, tmp_path: Path
) -> None:
    rows = [
        *_sample_rows(),
        make_row(
            "billing",
            "POST",
            "/payments",
            trend=_trend([230.0, 205.0, 214.0, 198.0, 210.0], [38.0, 41.5, 40.0, 44.0, 42.0]),
            rps=42.0,
            p95_ms=210.0,
            p99_ms=480.0,
            baseline_p95_ms=220.0,
            regress_pct=-4.5,
        ),
        make_row(
            "shop",
            "GET",
            "(unmatched)",
            trend=_trend([3.0, 3.4, 2.9, 3.3, 3.1], [0.2, 0.5, 0.3, 0.6, 0.4]),
            rps=0.4,
            p95_ms=3.1,
            err_rate=0.0,
            errors=0,
            count=24,
            regress_pct=None,
            baseline_p95_ms=None,
        ),
    ]
    velocity_server.stub.set_payload(make_payload(rows))
    browser_page.set_viewport_size({"width": 1400, "height": 460})
    # The page's own refresh interval, so the status line reads as in use.
    _open(browser_page, velocity_server, query="")
    expect(browser_page.locator(ROW_SELECTOR)).to_have_count(5)

    # With VELOCITY_UPDATE_SCREENSHOT=1 the test refreshes the picture in
    # docs/. Otherwise it writes to a temporary folder only.
    update_docs = os.environ.get("VELOCITY_UPDATE_SCREENSHOT") == "1"
    path = SCREENSHOT_PATH if update_docs else tmp_path / "velocity-page.png"
    browser_page.screenshot(path=str(path), full_page=True)

    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_exemplars_capped_at_three(browser_page: Any, velocity_server: VelocityServer) -> None:
    def exemplar(n: int, kind: str) -> dict[str, Any]:
        return {
            "trace_id": f"{n:032x}",
            "span_id": f"{n:016x}",
            "duration_ms": 100.0 - n,
            "status_code": 503 if kind == "error" else 200,
            "kind": kind,
            "time_s": 1.0,
            "trace_url": None,
        }

    exemplars = [exemplar(n, "error") for n in range(1, 6)]
    exemplars += [exemplar(n, "slow") for n in range(6, 11)]
    row = make_row("shop", "GET", "/many", exemplars=exemplars)
    velocity_server.stub.set_payload(make_payload([row]))

    _open(browser_page, velocity_server)

    shown = _row(browser_page, "/many").locator("[data-trace-id]")
    expect(shown).to_have_count(3)
    ids = [shown.nth(i).get_attribute("data-trace-id") for i in range(3)]
    assert ids == [f"{1:032x}", f"{6:032x}", f"{7:032x}"]
