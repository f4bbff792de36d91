"""Exemplars: a few concrete spans per route that a user can open as traces."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum


class ExemplarKind(str, Enum):
    ERROR = "error"
    SLOW = "slow"


@dataclass(frozen=True, slots=True)
class Exemplar:
    """One span kept as an example; ids are stored as ints and formatted only when read."""

    kind: ExemplarKind
    trace_id: int
    span_id: int
    duration_ms: float
    status_code: int | None
    time_s: float

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def span_id_hex(self) -> str:
        return format(self.span_id, "016x")


class ExemplarSet:
    """The most recent error spans and the slowest spans of the recent past for one route.

    Holds at most ``size`` spans of each kind. A slow exemplar older than ``max_age_s`` is
    replaced by the next span, so the slowest list follows the current traffic. Not
    thread-safe: the owning window holds the lock.

    ``offer`` keeps nothing from a span that is not an error, is not slower than ``floor_ms``
    and arrives before ``refresh_after_s``, so a caller may skip the call for such a span.
    """

    __slots__ = ("_errors", "_max_age_s", "_size", "_slowest", "floor_ms", "refresh_after_s")

    def __init__(self, size: int, max_age_s: float) -> None:
        self._errors: deque[Exemplar] = deque(maxlen=size)
        self._slowest: list[Exemplar] = []
        self._size = size
        self._max_age_s = max_age_s
        # The fastest kept slow exemplar once ``size`` are kept; until then every span qualifies.
        self.floor_ms = -math.inf
        # When the oldest kept slow exemplar turns stale and any span may replace it.
        self.refresh_after_s = -math.inf

    def offer(
        self,
        now_s: float,
        trace_id: int,
        span_id: int,
        duration_ms: float,
        status_code: int | None,
        is_error: bool,
    ) -> None:
        """Keep the span if it is an error or among the slowest; O(1) unless it is kept."""
        if is_error:
            self._errors.append(
                Exemplar(ExemplarKind.ERROR, trace_id, span_id, duration_ms, status_code, now_s)
            )

        if len(self._slowest) == self._size:
            if duration_ms <= self.floor_ms and now_s <= self.refresh_after_s:
                return
            self._slowest.remove(self._replacement_candidate(now_s))

        self._slowest.append(
            Exemplar(ExemplarKind.SLOW, trace_id, span_id, duration_ms, status_code, now_s)
        )
        if len(self._slowest) == self._size:
            self.floor_ms = min(e.duration_ms for e in self._slowest)
            self.refresh_after_s = min(e.time_s for e in self._slowest) + self._max_age_s

    def _replacement_candidate(self, now_s: float) -> Exemplar:
        """Return the oldest stale exemplar, or the fastest one when none is stale."""
        oldest = min(self._slowest, key=lambda e: e.time_s)
        if oldest.time_s + self._max_age_s < now_s:
            return oldest
        return min(self._slowest, key=lambda e: e.duration_ms)

    def snapshot(self, now_s: float) -> list[Exemplar]:
        """Return error exemplars newest first, then fresh slow exemplars slowest first.

        A slow span that is also an error exemplar is listed once, as an error.
        """
        error_span_ids = {e.span_id for e in self._errors}
        fresh_slowest = [
            e
            for e in self._slowest
            if e.time_s >= now_s - self._max_age_s and e.span_id not in error_span_ids
        ]
        fresh_slowest.sort(key=lambda e: e.duration_ms, reverse=True)
        return [*reversed(self._errors), *fresh_slowest]
