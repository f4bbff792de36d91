"""Tests for the Sentry deep links in otel_velocity_service.links."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from otel_velocity_service.links import (
    SentryLinkSettings,
    SentryNotConfigured,
    errors_search_query,
    errors_url,
    parse_route_key,
    quote_search_value,
    trace_url,
    traces_search_query,
    traces_url,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


# --- A model of how Sentry reads a quoted search value -----------------------
#
# Written from src/sentry/api/event_search.py in getsentry/sentry: the grammar
# rule quoted_value = '"' ('\\"' / ~r'[^"]')* '"', visit_quoted_value (which
# replaces \" with "), WILDCARD_CHARS, translate_wildcard and
# translate_escape_sequences. The tests use it to check that each quoted
# value means the route and nothing else.

_SENTRY_WILDCARD_RE = re.compile(r"(?<!\\)(\\\\)*\*")


def _read_quoted_value(text: str) -> tuple[str, int]:
    """Return the raw content of the quoted value at the start of ``text``
    and the index just past its closing quote, as Sentry's PEG parser does."""
    assert text.startswith('"'), text
    index = 1
    while index < len(text):
        if text.startswith('\\"', index):
            index += 2
        elif text[index] != '"':
            index += 1
        else:
            return text[1:index].replace('\\"', '"'), index + 1
    raise AssertionError(f"unterminated quoted value: {text!r}")


def _sentry_matches(quoted: str, candidate: str) -> bool:
    """Return whether Sentry's filter ``key:<quoted>`` matches ``candidate``."""
    value, end = _read_quoted_value(quoted)
    assert end == len(quoted), f"quoted value ends early: {quoted!r}"

    if _SENTRY_WILDCARD_RE.search(value):
        pattern = ""
        index = 0
        while index < len(value):
            char = value[index]
            index += 1
            if char == "\\" and index < len(value):
                pattern += re.escape(value[index])
                index += 1
            elif char == "*":
                pattern += ".*"
            else:
                pattern += re.escape(char)
        return re.fullmatch(pattern, candidate, flags=re.DOTALL) is not None

    literal = ""
    index = 0
    while index < len(value):
        char = value[index]
        index += 1
        if char == "\\" and index < len(value) and value[index] == "*":
            literal += "*"
            index += 1
        else:
            literal += char
    return literal == candidate


def _is_exact(quoted: str) -> bool:
    value, _ = _read_quoted_value(quoted)
    return _SENTRY_WILDCARD_RE.search(value) is None


# --- Helpers ------------------------------------------------------------------


def _settings(**overrides: object) -> SentryLinkSettings:
    values: dict[str, object] = {
        "org": "acme",
        "project_id": 12,
        "environment": "production",
    }
    values.update(overrides)
    return SentryLinkSettings(**values)  # type: ignore[arg-type]


def _query_params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


# --- Search syntax ---------------------------------------------------------------


def test_errors_query_plain_route() -> None:
    assert errors_search_query("GET", "/items/{item_id}") == (
        'route:"/items/{item_id}" method:"GET"'
    )


def test_traces_query_plain_route() -> None:
    assert traces_search_query("GET", "/items/{item_id}") == ('transaction:"GET /items/{item_id}"')


def test_errors_query_escapes_quote_backslash_space() -> None:
    route = '/a "b" \\c d'

    query = errors_search_query("POST", route)

    # A backslash stays single: Sentry reads "\c" as a backslash and a c.
    assert query == 'route:"/a \\"b\\" \\c d" method:"POST"'


def test_errors_query_injection_stays_one_value() -> None:
    route = '/a" OR route:"*'

    query = errors_search_query("GET", route)

    assert query == 'route:"/a\\" OR route:\\"\\*" method:"GET"'
    quoted_route = query.removeprefix("route:").removesuffix(' method:"GET"')
    assert _sentry_matches(quoted_route, route)
    assert _is_exact(quoted_route)
    assert not _sentry_matches(quoted_route, "/other")


def test_traces_query_injection_stays_one_value() -> None:
    route = '/a" OR transaction:"*'

    query = traces_search_query("GET", route)

    assert query == 'transaction:"GET /a\\" OR transaction:\\"\\*"'
    assert _sentry_matches(query.removeprefix("transaction:"), f"GET {route}")


@pytest.mark.parametrize(
    "value",
    [
        "/items/{item_id}",
        "(unmatched)",
        "/a b",
        '/a"b',
        '"',
        '/a\\"b',
        "/a\\b",
        "\\",
        "/a\\",
        "/a\\\\",
        "/files/*",
        "*",
        "/a\\*b",
        "/a\\\\*b",
        "/a\\\\\\*b",
        '/a" OR route:"*',
        "/tab\there",
        "/line\nbreak",
        "/ünïcode/✓",
    ],
)
def test_quoted_value_matches_itself(value: str) -> None:
    quoted = quote_search_value(value)

    assert _sentry_matches(quoted, value)


@pytest.mark.parametrize(
    "value",
    ["/items/{item_id}", '/a"b', '/a\\"b', "/a\\b", "/files/*", "*", "/a\\\\*b", "/x y"],
)
def test_quoted_value_exact_when_possible(value: str) -> None:
    quoted = quote_search_value(value)

    assert _is_exact(quoted)
    assert not _sentry_matches(quoted, value + "x")


@pytest.mark.parametrize("value", ["/a\\", "\\", "/a\\*b", "/a\\\\\\*b"])
def test_quoted_value_prefix_fallback(value: str) -> None:
    quoted = quote_search_value(value)

    assert not _is_exact(quoted)
    assert _sentry_matches(quoted, value)
    assert not _sentry_matches(quoted, "/other" + value)


# --- Route keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("GET /items/{item_id}", ("GET", "/items/{item_id}")),
        ("POST (unmatched)", ("POST", "(unmatched)")),
        ("* (overflow)", ("*", "(overflow)")),
        ("GET /a b", ("GET", "/a b")),
    ],
)
def test_parse_route_key_valid(key: str, expected: tuple[str, str]) -> None:
    assert parse_route_key(key) == expected


@pytest.mark.parametrize("key", ["", "GET", "GET ", "/items", " /items", "G(T /items"])
def test_parse_route_key_invalid(key: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_route_key(key)

    assert repr(key) in str(excinfo.value)
    assert "METHOD /route-template" in str(excinfo.value)


# --- URLs ---------------------------------------------------------------------------


def test_errors_url_saas_parameters() -> None:
    url = errors_url(_settings(), method="GET", route="/items/{item_id}")

    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.netloc == "acme.sentry.io"
    assert parts.path == "/issues/"
    assert parts.fragment == ""
    assert _query_params(url) == {
        "project": ["12"],
        "environment": ["production"],
        "statsPeriod": ["1h"],
        "query": ['route:"/items/{item_id}" method:"GET"'],
    }


def test_errors_url_encodes_every_part() -> None:
    route = '/a "b" \\c d'

    url = errors_url(_settings(environment="prod eu"), method="GET", route=route)

    raw_query = urlsplit(url).query
    for char in ' "\\{}:':
        assert char not in raw_query
    params = _query_params(url)
    assert params["query"] == ['route:"/a \\"b\\" \\c d" method:"GET"']
    assert params["environment"] == ["prod eu"]


def test_errors_url_injection_route() -> None:
    route = '/a" OR route:"*'

    url = errors_url(_settings(), method="GET", route=route)

    params = _query_params(url)
    assert params["query"] == ['route:"/a\\" OR route:\\"\\*" method:"GET"']
    assert params["project"] == ["12"]


def test_errors_url_without_environment() -> None:
    url = errors_url(_settings(environment=None), method="GET", route="/x")

    assert "environment" not in _query_params(url)


def test_errors_url_self_hosted_base() -> None:
    settings = _settings(base_url="https://sentry.example.com/base")

    url = errors_url(settings, method="DELETE", route="/items/{item_id}")

    parts = urlsplit(url)
    assert parts.netloc == "sentry.example.com"
    assert parts.path == "/base/organizations/acme/issues/"
    params = _query_params(url)
    assert params["project"] == ["12"]
    assert params["statsPeriod"] == ["1h"]
    assert params["query"] == ['route:"/items/{item_id}" method:"DELETE"']


def test_traces_url_saas_parameters() -> None:
    url = traces_url(_settings(), method="GET", route="/items/{item_id}")

    parts = urlsplit(url)
    assert parts.netloc == "acme.sentry.io"
    assert parts.path == "/explore/traces/"
    assert _query_params(url) == {
        "project": ["12"],
        "environment": ["production"],
        "statsPeriod": ["1h"],
        "query": ['transaction:"GET /items/{item_id}"'],
    }


def test_traces_url_self_hosted_base() -> None:
    settings = _settings(base_url="http://127.0.0.1:9000")

    url = traces_url(settings, method="GET", route="/x", stats_period="24h")

    parts = urlsplit(url)
    assert parts.scheme == "http"
    assert parts.netloc == "127.0.0.1:9000"
    assert parts.path == "/organizations/acme/explore/traces/"
    assert _query_params(url)["statsPeriod"] == ["24h"]


def test_trace_url_saas_and_self_hosted() -> None:
    saas = trace_url(_settings(), TRACE_ID.upper())
    self_hosted = trace_url(_settings(base_url="https://sentry.example.com"), TRACE_ID)

    assert saas == f"https://acme.sentry.io/explore/traces/trace/{TRACE_ID}/"
    assert self_hosted == (
        f"https://sentry.example.com/organizations/acme/explore/traces/trace/{TRACE_ID}/"
    )


def test_trace_url_timestamp_parameter() -> None:
    url = trace_url(_settings(), TRACE_ID, timestamp_s=1733339990.7)

    assert urlsplit(url).path == f"/explore/traces/trace/{TRACE_ID}/"
    assert _query_params(url) == {"timestamp": ["1733339990"]}


@pytest.mark.parametrize(
    "trace_id", ["", "abc", "0" * 32, TRACE_ID + "0", "g" * 32, "../" + TRACE_ID[3:]]
)
def test_trace_url_invalid_id(trace_id: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        trace_url(_settings(), trace_id)

    assert repr(trace_id) in str(excinfo.value)


def test_overflow_row_has_no_links() -> None:
    with pytest.raises(ValueError, match="overflow"):
        errors_url(_settings(), method="*", route="(overflow)")
    with pytest.raises(ValueError, match="overflow"):
        traces_url(_settings(), method="*", route="(overflow)")


def test_unmatched_route_links() -> None:
    url = errors_url(_settings(), method="GET", route="(unmatched)")

    assert _query_params(url)["query"] == ['route:"(unmatched)" method:"GET"']


@pytest.mark.parametrize("stats_period", ["", "1", "h", "0h", "1h&x=1"])
def test_invalid_stats_period(stats_period: str) -> None:
    with pytest.raises(ValueError, match="stats period"):
        errors_url(_settings(), method="GET", route="/x", stats_period=stats_period)


# --- Per-service projects -------------------------------------------------------------


def test_service_project_mapping() -> None:
    settings = _settings(project_ids_by_service={"shop": 21, "billing": 22})

    shop = errors_url(settings, method="GET", route="/x", service="shop")
    billing = traces_url(settings, method="GET", route="/x", service="billing")
    other = errors_url(settings, method="GET", route="/x", service="other")

    assert _query_params(shop)["project"] == ["21"]
    assert _query_params(billing)["project"] == ["22"]
    assert _query_params(other)["project"] == ["12"]


def test_unmapped_service_without_default() -> None:
    settings = _settings(project_id=None, project_ids_by_service={"shop": 21})

    with pytest.raises(SentryNotConfigured) as excinfo:
        errors_url(settings, method="GET", route="/x", service="billing")

    assert "'billing'" in excinfo.value.reason
    assert "VELOCITY_SENTRY_PROJECTS" in excinfo.value.reason


def test_settings_are_immutable() -> None:
    mapping = {"shop": 21}
    settings = _settings(project_ids_by_service=mapping)
    mapping["shop"] = 99

    assert settings.project_id_for("shop") == 21
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.org = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.project_ids_by_service["shop"] = 1  # type: ignore[index]


# --- Settings from the environment --------------------------------------------------------


def test_from_env_all_variables() -> None:
    settings = SentryLinkSettings.from_env(
        {
            "SENTRY_ORG": "acme",
            "SENTRY_PROJECT_ID": "12",
            "SENTRY_ENVIRONMENT": "staging",
            "SENTRY_URL": "https://sentry.example.com/",
            "VELOCITY_SENTRY_PROJECTS": " shop=21 , billing=22 ,",
        }
    )

    assert settings.org == "acme"
    assert settings.project_id == 12
    assert settings.environment == "staging"
    assert settings.base_url == "https://sentry.example.com"
    assert dict(settings.project_ids_by_service) == {"shop": 21, "billing": 22}


def test_from_env_aliases() -> None:
    settings = SentryLinkSettings.from_env(
        {"SENTRY_ORG_SLUG": "acme", "SENTRY_PROJECT_ID": "12", "SENTRY_ENV": "dev"}
    )

    assert settings.org == "acme"
    assert settings.environment == "dev"
    assert settings.base_url is None


def test_from_env_primary_names_win() -> None:
    settings = SentryLinkSettings.from_env(
        {
            "SENTRY_ORG": "primary",
            "SENTRY_ORG_SLUG": "alias",
            "SENTRY_PROJECT_ID": "12",
            "SENTRY_ENVIRONMENT": "prod",
            "SENTRY_ENV": "alias",
        }
    )

    assert settings.org == "primary"
    assert settings.environment == "prod"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("https://0123abcd@o4501.ingest.us.sentry.io/4505123", 4505123),
        ("https://key@sentry.example.com/sentry/42", 42),
        ("https://key@sentry.example.com/42/", 42),
    ],
)
def test_from_env_project_id_from_dsn(dsn: str, expected: int) -> None:
    settings = SentryLinkSettings.from_env({"SENTRY_ORG": "acme", "SENTRY_DSN": dsn})

    assert settings.project_id == expected


def test_from_env_project_id_beats_dsn() -> None:
    settings = SentryLinkSettings.from_env(
        {
            "SENTRY_ORG": "acme",
            "SENTRY_PROJECT_ID": "7",
            "SENTRY_DSN": "https://key@o1.ingest.sentry.io/99",
        }
    )

    assert settings.project_id == 7


def test_from_env_dsn_without_project_id() -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env(
            {"SENTRY_ORG": "acme", "SENTRY_DSN": "https://secretkey@sentry.example.com/shop"}
        )

    assert "SENTRY_DSN" in excinfo.value.reason
    assert "SENTRY_PROJECT_ID" in excinfo.value.reason
    assert "secretkey" not in excinfo.value.reason


def test_from_env_missing_org() -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env({"SENTRY_PROJECT_ID": "12", "SENTRY_ORG": "  "})

    assert "SENTRY_ORG" in excinfo.value.reason
    assert str(excinfo.value) == excinfo.value.reason


def test_from_env_missing_project() -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env({"SENTRY_ORG": "acme"})

    assert "SENTRY_PROJECT_ID" in excinfo.value.reason
    assert "VELOCITY_SENTRY_PROJECTS" in excinfo.value.reason


def test_from_env_mapping_without_default() -> None:
    settings = SentryLinkSettings.from_env(
        {"SENTRY_ORG": "acme", "VELOCITY_SENTRY_PROJECTS": "shop=12"}
    )

    assert settings.project_id is None
    assert settings.project_id_for("shop") == 12


@pytest.mark.parametrize("project_id", ["shop", "0", "-3", "1.5", "١٢"])
def test_from_env_project_slug_rejected(project_id: str) -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env({"SENTRY_ORG": "acme", "SENTRY_PROJECT_ID": project_id})

    assert "SENTRY_PROJECT_ID" in excinfo.value.reason
    assert repr(project_id) in excinfo.value.reason


@pytest.mark.parametrize("mapping", ["shop", "shop=", "=12", "shop=abc", "shop=1,shop=2"])
def test_from_env_invalid_service_mapping(mapping: str) -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env(
            {"SENTRY_ORG": "acme", "SENTRY_PROJECT_ID": "1", "VELOCITY_SENTRY_PROJECTS": mapping}
        )

    assert "VELOCITY_SENTRY_PROJECTS" in excinfo.value.reason


@pytest.mark.parametrize("org", ["Acme", "evil.com/x", "a b", "-acme", "acme.sentry.io"])
def test_invalid_org_slug(org: str) -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env({"SENTRY_ORG": org, "SENTRY_PROJECT_ID": "1"})

    assert "SENTRY_ORG" in excinfo.value.reason
    assert repr(org) in excinfo.value.reason


@pytest.mark.parametrize(
    "sentry_url", ["https://sentry.io", "https://us.sentry.io/", "https://de.sentry.io"]
)
def test_sentry_io_url_means_saas(sentry_url: str) -> None:
    settings = SentryLinkSettings.from_env(
        {"SENTRY_ORG": "acme", "SENTRY_PROJECT_ID": "1", "SENTRY_URL": sentry_url}
    )

    assert settings.base_url is None
    assert trace_url(settings, TRACE_ID).startswith("https://acme.sentry.io/")


@pytest.mark.parametrize(
    "sentry_url", ["sentry.example.com", "ftp://sentry.example.com", "https://x.example/?a=1"]
)
def test_invalid_sentry_url(sentry_url: str) -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env(
            {"SENTRY_ORG": "acme", "SENTRY_PROJECT_ID": "1", "SENTRY_URL": sentry_url}
        )

    assert "SENTRY_URL" in excinfo.value.reason


def test_sentry_url_credentials_not_echoed() -> None:
    with pytest.raises(SentryNotConfigured) as excinfo:
        SentryLinkSettings.from_env(
            {
                "SENTRY_ORG": "acme",
                "SENTRY_PROJECT_ID": "1",
                "SENTRY_URL": "https://user:hunter2@sentry.example.com",
            }
        )

    assert "SENTRY_URL" in excinfo.value.reason
    assert "hunter2" not in excinfo.value.reason
