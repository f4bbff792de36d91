"""Tests of the Relay normalizer helpers, partly on events sent by the real sentry-sdk.

The limits asserted here are the ones documented in tests/support/relay.py, observed
with sentry-relay 0.10.1.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sentry_sdk

from tests.support.relay import normalize_event, normalizer_remarks, tag_problems
from tests.support.sentry_fixtures import scoped_sentry_client
from tests.support.sentry_ingest import SentryIngest


def capture_with_tags(ingest: SentryIngest, tags: dict[str, str]) -> dict[str, Any]:
    """Send a message event with `tags` through sentry-sdk and return it as received."""
    with scoped_sentry_client(ingest.dsn, release="app@1.0.0", environment="ci"):
        for key, value in tags.items():
            sentry_sdk.set_tag(key, value)
        sentry_sdk.capture_message("tagged")
    event: dict[str, Any] = ingest.wait_for(1)[0]
    return event


def event_with_tags(tags: object) -> dict[str, Any]:
    return {"message": "m", "timestamp": time.time(), "platform": "python", "tags": tags}


def test_clean_sdk_event_passes(sentry_ingest: SentryIngest) -> None:
    event = capture_with_tags(
        sentry_ingest, {"http.route": "/users/{id}", "velocity.window": "60s"}
    )
    normalized = normalize_event(event, client=f"sentry.python/{sentry_sdk.VERSION}")

    assert normalizer_remarks(normalized) == []
    assert tag_problems(event) == []
    assert normalized["release"] == "app@1.0.0"
    assert normalized["environment"] == "ci"
    assert ["http.route", "/users/{id}"] in normalized["tags"]


def test_sdk_newline_tag_value_flagged(sentry_ingest: SentryIngest) -> None:
    event = capture_with_tags(sentry_ingest, {"error.message": "line one\nline two"})
    remarks = normalizer_remarks(normalize_event(event))
    problems = tag_problems(event)

    assert event["tags"] == {"error.message": "line one\nline two"}
    assert [(remark.path, remark.code) for remark in remarks] == [("tags.0.1", "invalid_data")]
    assert remarks[0].reason == "invalid character '\\n'"
    assert remarks[0].original_value == "line one\nline two"
    assert problems == ["tag 'error.message' value: error invalid_data (invalid character '\\n')"]


def test_sdk_long_tag_value_flagged(sentry_ingest: SentryIngest) -> None:
    event = capture_with_tags(sentry_ingest, {"url.full": "x" * 201})
    normalized = normalize_event(event)
    remarks = normalizer_remarks(normalized)

    assert len(event["tags"]["url.full"]) == 201
    assert [(remark.path, remark.code) for remark in remarks] == [("tags.0.1", "!limit")]
    assert remarks[0].original_length == 201
    assert ["url.full", "x" * 197 + "..."] in normalized["tags"]
    assert len(tag_problems(event)) == 1


def test_tag_value_limit_is_200_characters() -> None:
    assert tag_problems(event_with_tags({"k": "v" * 200})) == []
    assert len(tag_problems(event_with_tags({"k": "v" * 201}))) == 1


def test_tag_limit_counts_code_points() -> None:
    # 200 characters, 800 bytes in UTF-8.
    assert tag_problems(event_with_tags({"k": "\N{GRINNING FACE}" * 200})) == []


def test_tag_key_limit_is_200_characters() -> None:
    assert tag_problems(event_with_tags({"k" * 200: "v"})) == []
    assert len(tag_problems(event_with_tags({"k" * 201: "v"}))) == 1


def test_invalid_tag_key_character_flagged() -> None:
    problems = tag_problems(event_with_tags({"http/route": "v"}))
    assert problems == ["tag 'http/route' key: error invalid_data (invalid character '/')"]


def test_silent_tag_changes_reported() -> None:
    cases: dict[str, Any] = {
        "reserved key": {"release": "1.0"},
        "space in key": {"a b": "v"},
        "outer whitespace": {"k": " v "},
        "float value": {"k": 1.5},
        "null value": {"k": None},
    }
    for name, tags in cases.items():
        assert tag_problems(event_with_tags(tags)) != [], name


def test_duplicate_tag_reported() -> None:
    problems = tag_problems(event_with_tags([["k", "first"], ["k", "second"]]))
    assert problems == ["tag 'k'='second' is missing or changed after normalization"]


def test_server_name_tag_derived() -> None:
    event = {**event_with_tags({"server_name": "from-tag"}), "server_name": "host-1"}
    problems = tag_problems(event)
    assert problems == ["tag 'server_name'='from-tag' is missing or changed after normalization"]


def test_int_and_bool_tags_pass() -> None:
    assert tag_problems(event_with_tags({"count": 3, "cached": True})) == []


def test_remarks_outside_tags_listed() -> None:
    normalized = normalize_event({"message": "m", "release": "latest", "extra": {"x": "y" * 20000}})
    remarks = {remark.path: remark for remark in normalizer_remarks(normalized)}

    assert remarks["release"].code == "invalid_data"
    assert remarks["release"].original_value == "latest"
    assert remarks["extra.x"].code == "!limit"
    assert remarks["extra.x"].original_length == 20000


def test_normalized_event_rejected() -> None:
    normalized = normalize_event(event_with_tags({"k": "v"}))
    with pytest.raises(ValueError, match="event as sent"):
        tag_problems(normalized)
