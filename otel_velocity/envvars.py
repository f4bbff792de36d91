"""Readers for settings in environment variables, shared by the library and the service.

Each reader returns the default for a missing or blank variable and raises ``ValueError`` naming
the variable, the value and what is accepted, so a start-up fails with a message the user can act
on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def first_set(env: Mapping[str, str], *names: str) -> str | None:
    """Return the first non-blank value among ``names``: the standard name, then its aliases."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not an integer; set a whole number such as {default}"
        ) from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value


def finite_float(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    """Read a positive finite number, or one of 0 or more with ``allow_zero``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a number; set a value such as {default:g}"
        ) from None

    in_range = (value >= 0 if allow_zero else value > 0) and value < math.inf
    if not in_range:
        expected = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name}={raw!r} must be a finite number of {expected}")
    return value


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; set true or false")
