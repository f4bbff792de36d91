"""Sentry's event normalizer, from the ``sentry_relay`` package, for checking captured events.

`normalize_event` runs ``sentry_relay.processing.StoreNormalizer`` with the options
that Sentry's ``EventManager._normalize_impl`` passes on first ingest: not a
renormalization, ``remove_other`` and ``normalize_user_agent`` on, and
``DEFAULT_STORE_NORMALIZER_ARGS`` from ``sentry/constants.py``
(``max_secs_in_future=60``, ``max_secs_in_past=2592000``, ``enable_trimming=True``).
It needs no GeoIP database, network or project config.
`normalizer_remarks` lists what the normalizer flagged, and `tag_problems` lists every
tag that would not reach Sentry as sent.

Tag rules observed with sentry-relay 0.10.1 (``tests/support_tests`` checks the main
ones):

- Keys and values may have at most 200 characters, counted as Unicode code points.
  A longer key or value is cut to 197 characters plus ``...``, and ``_meta`` records
  a ``!limit`` removal with the original length. Without ``enable_trimming`` nothing
  is cut.
- Keys may contain only ASCII letters, digits, ``_``, ``.``, ``:`` and ``-``. Each
  space becomes ``-`` without a remark. Any other character (``/``, ``@``, a tab, a
  newline, a non-ASCII letter) makes the key invalid: it is set to null with the error
  ``invalid_data`` ``invalid character 'X'``.
- A value containing ``\\n`` is set to null with ``invalid character '\\n'``. A
  ``\\r``, tab, NUL or U+2028 inside a value is kept. Leading and trailing whitespace
  is stripped without a remark, before the length check. An empty or all-whitespace
  value is set to null with ``expected a non-empty value``. A dict or list is set to
  null with ``expected a primitive value``.
- Integers become decimal strings, booleans ``"True"`` or ``"False"``, and floats are
  truncated to an integer string (``1.5`` becomes ``"1"``), all without a remark.
- The keys ``release``, ``dist``, ``user``, ``filename`` and ``function`` are removed
  without a remark. An ``environment`` tag is moved to the event's ``environment``
  when that is unset and removed otherwise. Of duplicate keys the first is kept.
- The event fields ``server_name`` and ``site`` become tags of the same name and
  replace a tag with that name. sentry-sdk sets ``server_name`` to the host name.
- The output is a list of ``[key, value]`` pairs sorted by key.

For the event itself: ``release`` may have at most 200 characters and must not be
``.``, ``..`` or ``latest`` or contain ``/``, ``\\``, a tab or a newline.
``environment`` may have at most 64 characters, must not be ``none`` or ``None`` and
must not contain ``/``, ``\\`` or a tab. An invalid release or environment is removed
with an ``invalid_data`` error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sentry_relay.processing import StoreNormalizer

# Values of sentry.constants.MAX_SECS_IN_FUTURE and MAX_SECS_IN_PAST.
MAX_SECS_IN_FUTURE = 60
MAX_SECS_IN_PAST = 30 * 24 * 60 * 60

# Relay's remark types, from relay-protocol's RemarkType.
_REMARK_TYPES = {
    "a": "annotated",
    "x": "removed",
    "s": "substituted",
    "m": "masked",
    "p": "pseudonymized",
    "e": "encrypted",
}


@dataclass(frozen=True)
class NormalizerRemark:
    """One error or removal that the normalizer recorded in the event's ``_meta``."""

    path: str
    """Dotted path into the normalized event, for example ``tags.0.1`` (first tag's value)."""
    kind: Literal["error", "removal"]
    code: str
    """Error kind such as ``invalid_data``, or removal rule such as ``!limit``."""
    reason: str
    original_value: Any
    """The value before normalization, when Relay kept it in ``_meta``."""
    original_length: int | None
    """Length before trimming, when Relay recorded it."""

    def __str__(self) -> str:
        text = f"{self.path}: {self.kind} {self.code}"
        if self.reason:
            text += f" ({self.reason})"
        if self.original_length is not None:
            text += f", original length {self.original_length}"
        if self.original_value is not None:
            text += f", original value {self.original_value!r}"
        return text


def normalize_event(
    event: Mapping[str, Any],
    *,
    project_id: int | None = None,
    client: str | None = None,
    key_id: str | None = None,
    protocol_version: str | None = "7",
) -> dict[str, Any]:
    """Normalize an event the way Sentry does on ingest and return the result.

    `client` is the ``sentry_client`` of the X-Sentry-Auth header, for example
    ``sentry.python/2.76.0``. The result has a ``_meta`` key and an ``errors`` list when
    the normalizer recorded an error or removal. Some changes leave no record: the
    module docstring lists those seen for tags.
    """
    normalizer = StoreNormalizer(
        project_id=project_id,
        client=client,
        key_id=key_id,
        protocol_version=protocol_version,
        is_renormalize=False,
        remove_other=True,
        normalize_user_agent=True,
        max_secs_in_future=MAX_SECS_IN_FUTURE,
        max_secs_in_past=MAX_SECS_IN_PAST,
        enable_trimming=True,
    )
    normalized: dict[str, Any] = normalizer.normalize_event(dict(event))
    return normalized


def _walk_meta(node: Mapping[str, Any], path: list[str]) -> Iterator[NormalizerRemark]:
    for key, child in node.items():
        if not isinstance(child, Mapping):
            continue
        if key == "":
            yield from _remarks_at(".".join(path), child)
        else:
            yield from _walk_meta(child, [*path, key])


def _remarks_at(path: str, meta: Mapping[str, Any]) -> Iterator[NormalizerRemark]:
    original_value = meta.get("val")
    original_length = meta.get("len")
    for error in meta.get("err") or []:
        # An error is either a bare kind or a [kind, {details}] pair.
        if isinstance(error, list) and error:
            code = str(error[0])
            details = error[1] if len(error) > 1 and isinstance(error[1], Mapping) else {}
            reason = str(details.get("reason", "")) or ", ".join(
                f"{k}={v}" for k, v in details.items()
            )
        else:
            code, reason = str(error), ""
        yield NormalizerRemark(path, "error", code, reason, original_value, original_length)
    for remark in meta.get("rem") or []:
        # A remark is [rule_id, type] or [rule_id, type, start, end] over the new value.
        rule_id = str(remark[0]) if remark else ""
        remark_type = _REMARK_TYPES.get(remark[1], str(remark[1])) if len(remark) > 1 else ""
        span = f" at {remark[2]}..{remark[3]}" if len(remark) > 3 else ""
        yield NormalizerRemark(
            path, "removal", rule_id, f"{remark_type}{span}", original_value, original_length
        )


def normalizer_remarks(normalized_event: Mapping[str, Any]) -> list[NormalizerRemark]:
    """List every error and removal recorded in a normalized event's ``_meta``."""
    meta = normalized_event.get("_meta")
    if not isinstance(meta, Mapping):
        return []
    return list(_walk_meta(meta, []))


def _tag_pairs(tags: object) -> list[tuple[Any, Any]]:
    if isinstance(tags, Mapping):
        return list(tags.items())
    if isinstance(tags, list):
        return [
            (pair[0], pair[1]) for pair in tags if isinstance(pair, list | tuple) and len(pair) == 2
        ]
    return []


def _relay_string(value: object) -> str | None:
    """Return the string Relay keeps for a tag value it does not change, for comparison.

    Other values (floats, dicts, lists) get their repr, which never equals what Relay
    outputs for them, so they count as changed.
    """
    if value is None:
        return None
    if isinstance(value, bool | int | str):
        return str(value)
    return repr(value)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _tag_index(remark: NormalizerRemark) -> int | None:
    """Return the index into the normalized tag list that a ``tags.N...`` remark is about."""
    parts = remark.path.split(".")
    if len(parts) > 1 and parts[0] == "tags" and parts[1].isdigit():
        return int(parts[1])
    return None


def tag_problems(event: Mapping[str, Any]) -> list[str]:
    """Normalize `event` and describe each tag that Sentry would not store as sent.

    The list covers the ``_meta`` remarks under ``tags`` and the changes Relay makes
    without a remark: removed, renamed or rewritten tags. An empty list means every
    tag survives unchanged. Raise ValueError for an event that was normalized already,
    because its tags no longer show what was sent.
    """
    # The normalizer adds "received", and sentry-sdk 2.76.0 never sends it.
    if "received" in event:
        raise ValueError(
            "tag_problems needs the event as sent, for example from SentryIngest.events(), "
            "not the output of normalize_event"
        )
    normalized = normalize_event(event)
    normalized_tags = _tag_pairs(normalized.get("tags"))
    problems: list[str] = []

    # Keys of tags that a remark already describes, so the comparison below skips them.
    explained_keys: set[Any] = set()
    explained_indices: set[int] = set()
    for remark in normalizer_remarks(normalized):
        if remark.path != "tags" and not remark.path.startswith("tags."):
            continue
        index = _tag_index(remark)
        if index is None or index >= len(normalized_tags):
            problems.append(f"tags: {remark}")
            continue
        key = normalized_tags[index][0]
        # An invalid key is null in the output, and _meta keeps the original key.
        name = key if key is not None else remark.original_value
        field = "key" if remark.path.endswith(".0") else "value"
        text = f"tag {_short_repr(name)} {field}: {remark.kind} {remark.code}"
        if remark.reason:
            text += f" ({remark.reason})"
        if remark.original_length is not None:
            text += f", original length {remark.original_length}"
        problems.append(text)
        explained_keys.add(name)
        explained_indices.add(index)

    def is_explained(key: object) -> bool:
        if key in explained_keys:
            return True
        # A key over 200 characters comes out as its first 197 characters and "...".
        return isinstance(key, str) and f"{key[:197]}..." in explained_keys

    normalized_pairs = {
        (key, value)
        for index, (key, value) in enumerate(normalized_tags)
        if key is not None and value is not None and index not in explained_indices
    }
    original_pairs = _tag_pairs(event.get("tags"))
    for key, value in original_pairs:
        if is_explained(key) or (key, _relay_string(value)) in normalized_pairs:
            continue
        problems.append(
            f"tag {_short_repr(key)}={_short_repr(value)} is missing or changed after normalization"
        )

    # Relay moves the event's server_name and site fields into tags of the same name.
    derived = {
        (name, event[name]) for name in ("server_name", "site") if isinstance(event.get(name), str)
    }
    original = {(key, _relay_string(value)) for key, value in original_pairs}
    for key, value in sorted(normalized_pairs - original - derived, key=repr):
        problems.append(
            f"normalized event has tag {_short_repr(key)}={_short_repr(value)}, which was not sent"
        )
    return problems
