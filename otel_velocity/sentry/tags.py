"""Tag values that Sentry keeps as sent.

Sentry's event normalizer (checked with the ``sentry-relay`` package in the tests) drops a tag
whose value is longer than 200 characters or contains a newline; a dropped tag would break the
deep links that filter on it. Values are therefore cleaned and cut here, before sending.
"""

from __future__ import annotations

MAX_TAG_VALUE_LENGTH = 200

_CONTROL_CHARACTERS = {code: " " for code in (*range(0x20), 0x7F)}


def tag_value(value: object) -> str:
    """Return ``value`` as a Sentry tag value: control characters become spaces, cut to 200."""
    text = str(value).translate(_CONTROL_CHARACTERS).strip()
    return text[:MAX_TAG_VALUE_LENGTH] or "(empty)"
