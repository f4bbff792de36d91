"""The page in headless Chromium against the real service, fed with real OTLP spans.

The stand-in server of ``test_page_browser.py`` covers the page's behaviour case by case; this
file checks the whole path once: SDK spans → OTLP/HTTP → windows → JSON → rendered rows and links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import RunningService, ServerSpans
from otel_velocity_service.links import SentryLinkSettings
from otel_velocity_service.settings import ServiceSettings
from playwright.sync_api import expect

from otel_velocity.windows import WindowSettings

ROW_SELECTOR = "#velocity-rows tr"


@pytest.fixture
def sentry_service(start_service: Callable[..., RunningService]) -> RunningService:
    links = SentryLinkSettings.from_env(
        {"SENTRY_ORG": "acme", "SENTRY_PROJECT_ID": "12", "SENTRY_ENVIRONMENT": "production"}
    )
    settings = ServiceSettings(sentry_links=links, sentry_off_reason=None)
    return start_service(settings=settings, window=WindowSettings(min_samples=20))


@pytest.fixture
def real_page(chromium_browser: Any, sentry_service: RunningService) -> Iterator[Any]:
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    allowed = urlsplit(sentry_service.base_url).netloc
    context.route(
        "**/*",
        lambda route: (
            route.continue_() if urlsplit(route.request.url).netloc == allowed else route.abort()
        ),
    )
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _row(page: Any, route: str) -> Any:
    return page.locator(ROW_SELECTOR, has=page.locator(".route-template", has_text=route))


def _feed_regression(service: RunningService, spans: ServerSpans) -> None:
    """Export 15 minutes of 20 ms checkouts, then a minute at 80 ms, and a healthy route."""
    for minute in range(16):
        duration_ms = 80.0 if minute == 15 else 20.0
        for _ in range(30):
            spans.add("/cart/{cart_id}/checkout", method="POST", duration_ms=duration_ms)
        for n in range(30):
            spans.add("/items/{item_id}", duration_ms=5.0, status_code=404 if n == 0 else 200)
        assert spans.export(service.base_url).name == "SUCCESS"
        spans.clear()
        service.clock.advance(60.0)
    service.clock.advance(-1.0)


def test_real_service_page_rows_and_links(
    real_page: Any, sentry_service: RunningService, server_spans: ServerSpans
) -> None:
    _feed_regression(sentry_service, server_spans)
    table = sentry_service.rows()
    checkout = table[("shop", "POST /cart/{cart_id}/checkout")]
    assert checkout["is_regress"] is True

    real_page.goto(sentry_service.url("/velocity?refresh_ms=500"))

    red = _row(real_page, "/cart/{cart_id}/checkout")
    healthy = _row(real_page, "/items/{item_id}")
    expect(red).to_have_class(re.compile(r"\brow-bad\b"))
    expect(healthy).not_to_have_class(re.compile(r"\brow-bad\b"))
    button = red.locator("a.sentry-button")
    expect(button).to_have_attribute("href", checkout["links"]["errors"])
    query = parse_qs(urlsplit(button.get_attribute("href") or "").query)
    assert query["project"] == ["12"]
    assert query["query"] == ['route:"/cart/{cart_id}/checkout" method:"POST"']


def test_real_service_page_trace_link(
    real_page: Any, sentry_service: RunningService, server_spans: ServerSpans
) -> None:
    span = server_spans.add("/boom", status_code=503, duration_ms=12.0)
    assert server_spans.export(sentry_service.base_url).name == "SUCCESS"
    trace_id = format(span.context.trace_id, "032x")

    real_page.goto(sentry_service.url("/velocity?refresh_ms=500"))

    link = real_page.locator(f"a.trace-link[data-trace-id='{trace_id}']")
    expect(link).to_have_count(1)
    href = link.get_attribute("href") or ""
    assert urlsplit(href).path == f"/explore/traces/trace/{trace_id}/"
    assert urlsplit(href).netloc == "acme.sentry.io"


def test_real_service_page_auto_refresh(
    real_page: Any, sentry_service: RunningService, server_spans: ServerSpans
) -> None:
    server_spans.add("/first")
    server_spans.export(sentry_service.base_url)
    real_page.goto(sentry_service.url("/velocity?refresh_ms=300"))
    expect(_row(real_page, "/first")).to_have_count(1)

    server_spans.clear()
    server_spans.add("/second", method="POST")
    server_spans.export(sentry_service.base_url)

    expect(_row(real_page, "/second")).to_have_count(1)
    expect(_row(real_page, "/first")).to_have_count(1)
