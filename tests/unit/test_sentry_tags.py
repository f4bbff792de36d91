import pytest

from otel_velocity.sentry.tags import MAX_TAG_VALUE_LENGTH, tag_value
from tests.support.relay import tag_problems

HOSTILE_VALUES = [
    "/items/{item_id}",
    "/a\nb",
    "/a\r\nb",
    "  /padded  ",
    "",
    "\n",
    "/" + "x" * 500,
    "/" + "é" * 300,
    '/a" OR route:"*',
    "/tab\there",
]


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
def test_tag_value_survives_relay(raw: str) -> None:
    value = tag_value(raw)
    event = {"message": "m", "level": "error", "tags": {"route": value}}
    assert tag_problems(event) == []
    assert len(value) <= MAX_TAG_VALUE_LENGTH


def test_tag_value_keeps_clean_routes() -> None:
    assert tag_value("/items/{item_id}") == "/items/{item_id}"


def test_tag_value_replaces_newlines() -> None:
    assert tag_value("/a\nb") == "/a b"
