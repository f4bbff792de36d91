"""A clock for registries and services under test: time moves only when a test says so."""

from __future__ import annotations

# A Unix time on a 10-second bucket boundary, so window arithmetic in tests is exact.
START_S = 1_700_000_000.0


class ManualClock:
    """A clock that moves only when a test calls ``advance`` or sets ``now_s``."""

    def __init__(self, now_s: float = START_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
