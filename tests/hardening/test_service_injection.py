"""Hostile route strings, sent as real OTLP spans to the real service, stay inert everywhere.

* The page (real Chromium) shows them as text: no script runs, no element is added.
* A Sentry link filters on exactly one quoted route and one method. The test reads it with
  Sentry's search grammar as ``otel_velocity_service.links.quote_search_value`` describes it. A
  quoted value is '"', then '\\"' or any character but '"', then '"'. A '*' is a wildcard
  unless an odd number of backslashes precedes it.
* The tags the library sends for the route pass Sentry's event normalizer unchanged
  (``tests/support/relay.py``).

``tests/service/test_links.py`` checks the link functions alone; these go through ingest,
the registry and the endpoints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from otel_velocity_service import ServiceSettings, create_app
from otel_velocity_service.links import SentryLinkSettings
from playwright.sync_api import expect
from test_service_harness import (  # noqa: F401 - *_fixture are fixtures
    ManualClock,
    RunningService,
    chromium_fixture,
    manual_clock_fixture,
    open_page,
    pb,
    serve_app,
    start_service_fixture,
)

from otel_velocity import VelocityRegistry
from otel_velocity.routes import route_key
from otel_velocity.sentry.tags import tag_value
from tests.support.relay import tag_problems

PWN = "window.__pwned=1"
HOSTILE_ROUTES = [
    f"/<script>{PWN}</script>",
    f'/<img src=x onerror="{PWN}">',
    f'/"><svg onload={PWN}>',
    f"javascript:{PWN}",
    "/a' OR '1'='1",
    '/q" OR route:"*',
    '/x" method:"POST',
    "/star*/{id}",
    "/back\\slash\\",
    "/odd\\*",
    "/even\\\\*",
    '/line\nroute:"/admin"',
    "/tab\there",
    "!has:route",
    "/paren) OR (route:x",
    "/${" + PWN + "}/{{constructor.constructor('" + PWN + "')()}}",
    "/sep\u2028line\u2029para",
    "/" + "<b>" * 70,
    "/unicode/ünï/日本",
    'transaction:"GET /" event.type:error',
]
HOSTILE_SERVICE = f"<img src=x onerror={PWN}>"
SERVICE_KEYS = {route_key({"http.method": "GET", "http.route": route}) for route in HOSTILE_ROUTES}


LINKS = ServiceSettings(sentry_links=SentryLinkSettings(org="acme", project_id=12))


@pytest.fixture(scope="module")
def hostile_service() -> Iterator[RunningService]:
    """The service with Sentry links on, after one export of every hostile route.

    The tests only read it, so one service serves the whole module.
    """
    clock = ManualClock()
    registry = VelocityRegistry(clock=clock)
    app = create_app(registry, LINKS, clock=clock)
    with serve_app(app) as base_url:
        service = RunningService(base_url, app, registry, clock)
        spans = [pb.span(route=route) for route in HOSTILE_ROUTES]
        body = pb.request(
            pb.resource_spans(spans, service="shop"),
            pb.resource_spans([pb.span(route="/svc")], service=HOSTILE_SERVICE),
        )
        response = service.post(body)
        assert response.status_code == 200
        yield service


# --- Sentry search syntax -------------------------------------------------------------------

_FILTER_KEY = re.compile(r'([a-z_.]+):"')


def parse_search(query: str) -> list[tuple[str, str]]:
    """Split a Sentry search into (key, raw quoted value) filters, reading as Sentry does.

    Raises ValueError for anything but 'key:"value"' filters separated by single spaces: free
    text, parentheses, boolean operators or an unterminated quote.
    """
    filters = []
    pos = 0
    while pos < len(query):
        match = _FILTER_KEY.match(query, pos)
        if match is None:
            raise ValueError(f"not a quoted filter at {pos}: {query[pos:]!r}")
        pos = match.end()
        value = []
        while True:
            if pos >= len(query):
                raise ValueError(f"unterminated quoted value in {query!r}")
            if query.startswith('\\"', pos):
                value.append('"')
                pos += 2
            elif query[pos] == '"':
                pos += 1
                break
            else:
                value.append(query[pos])
                pos += 1
        filters.append((match.group(1), "".join(value)))
        if pos < len(query):
            if query[pos] != " ":
                raise ValueError(f"filters not separated by a space at {pos} in {query!r}")
            pos += 1
    return filters


def search_value_matches(raw: str) -> tuple[str, bool]:
    """Return what a quoted value matches: (text, False) exactly, or (prefix, True).

    A '*' after an odd run of backslashes is a literal '*'; any other '*' is a wildcard. In a
    value with a wildcard, '\\c' is a literal c; the only wildcard allowed here is a last one.
    """
    wildcards = [
        match.start(2) for match in re.finditer(r"(\\*)(\*)", raw) if len(match.group(1)) % 2 == 0
    ]
    if not wildcards:
        return re.sub(r"\\((?:\\\\)*)\*", r"\1*", raw), False

    assert wildcards == [len(raw) - 1], f"a wildcard inside {raw!r}"
    return re.sub(r"\\(.)", r"\1", raw[:-1]), True


def link_query(service: RunningService, key: Any, kind: str = "errors") -> str:
    response = httpx.get(
        service.url("/ops/sentry-link"),
        params={"route": str(key), "service": "shop", "kind": kind},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return parse_qs(urlsplit(response.json()["url"]).query)["query"][0]


@pytest.mark.parametrize("route", HOSTILE_ROUTES, ids=range(len(HOSTILE_ROUTES)))
def test_errors_link_is_one_route_one_method(hostile_service: RunningService, route: str) -> None:
    key = route_key({"http.method": "GET", "http.route": route})

    filters = parse_search(link_query(hostile_service, key))

    assert [name for name, _ in filters] == ["route", "method"]
    assert search_value_matches(filters[1][1]) == ("GET", False)
    text, is_prefix = search_value_matches(filters[0][1])
    assert text == key.route
    # A route that ends in a backslash, or has an odd run of them before '*', has no exact
    # quoted form. links.quote_search_value falls back to a prefix match for those only.
    assert is_prefix == bool(re.search(r"\\$|(?<!\\)\\(\\\\)*\*", key.route))


@pytest.mark.parametrize("route", HOSTILE_ROUTES, ids=range(len(HOSTILE_ROUTES)))
def test_traces_link_is_one_transaction(hostile_service: RunningService, route: str) -> None:
    key = route_key({"http.method": "GET", "http.route": route})

    filters = parse_search(link_query(hostile_service, key, kind="traces"))

    assert [name for name, _ in filters] == ["transaction"]
    text, _ = search_value_matches(filters[0][1])
    assert text == str(key)


def test_table_links_one_route_one_method(hostile_service: RunningService) -> None:
    rows = [row for row in hostile_service.table(limit=1000)["rows"] if row["service"] == "shop"]

    assert len(rows) == len(SERVICE_KEYS)
    for row in rows:
        query = parse_qs(urlsplit(row["links"]["errors"]).query)["query"][0]
        assert [name for name, _ in parse_search(query)] == ["route", "method"], row["key"]


# --- Sentry tags ------------------------------------------------------------------------------


def sentry_event(key: Any) -> dict[str, Any]:
    """An error event tagged the way otel_velocity.sentry.correlation tags one."""
    return {
        "message": "boom",
        "timestamp": time.time(),
        "platform": "python",
        "transaction": tag_value(str(key)),
        "tags": {"route": tag_value(key.route), "method": tag_value(key.method)},
    }


@pytest.mark.parametrize("route", HOSTILE_ROUTES, ids=range(len(HOSTILE_ROUTES)))
def test_route_tags_pass_relay(hostile_service: RunningService, route: str) -> None:
    rows = {row["key"] for row in hostile_service.table(limit=1000)["rows"]}
    key = route_key({"http.method": "GET", "http.route": route})
    assert str(key) in rows

    assert tag_problems(sentry_event(key)) == []


@pytest.mark.parametrize("route", HOSTILE_ROUTES, ids=range(len(HOSTILE_ROUTES)))
def test_link_filters_on_sent_tag(hostile_service: RunningService, route: str) -> None:
    key = route_key({"http.method": "GET", "http.route": route})

    filters = parse_search(link_query(hostile_service, key))

    text, _ = search_value_matches(filters[0][1])
    assert text == tag_value(key.route)


def test_link_tag_route_cut_at_space(start_service: Any) -> None:
    service = start_service(LINKS)
    route = "/" + "a" * 198 + " tail"
    assert service.post(pb.spans_request([pb.span(route=route)])).status_code == 200
    key = route_key({"http.method": "GET", "http.route": route})

    filters = parse_search(link_query(service, key))

    text, _ = search_value_matches(filters[0][1])
    assert text == tag_value(key.route)


# --- The page ---------------------------------------------------------------------------------


def test_page_renders_hostile_routes_as_text(
    chromium: Any, hostile_service: RunningService
) -> None:
    expected_routes = [*sorted(key.route for key in SERVICE_KEYS), "/svc"]
    dialogs: list[str] = []

    with open_page(chromium, hostile_service.base_url) as view:
        page = view.page
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(hostile_service.url("/velocity?refresh_ms=200&sort=key&order=asc"))
        expect(page.locator("#velocity-rows tr")).to_have_count(len(expected_routes))
        # Two refreshes more: a payload that ran on an update of the rows would have run.
        for _ in range(2):
            with page.expect_response(lambda response: "/ops/velocity" in response.url):
                pass

        pwned = page.evaluate("typeof window.__pwned")
        shown_routes = page.locator("#velocity-rows .route-template").all_text_contents()
        shown_services = set(page.locator("#velocity-rows .service-name").all_text_contents())
        options = page.locator("#service-filter option").all_text_contents()
        scripts = page.locator("script").count()
        injected = page.locator("img, iframe, object, embed, [onerror], [onload]").count()
        links = page.locator("#velocity-rows a").evaluate_all("links => links.map(a => a.href)")
        errors = list(view.console_errors)

    assert pwned == "undefined"
    assert dialogs == []
    assert errors == []
    assert sorted(shown_routes) == sorted(expected_routes)
    assert shown_services == {"shop", HOSTILE_SERVICE}
    assert HOSTILE_SERVICE in options
    assert scripts == 1
    assert injected == 0
    assert links
    assert [href for href in links if not href.startswith("https://acme.sentry.io/")] == []
