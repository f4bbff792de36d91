"""Mergeable latency sketch with a relative-error guarantee.

The sketch is a DDSketch (Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable Quantile
Sketch with Relative-Error Guarantees", VLDB 2019). Values are mapped to integer keys with the
`ddsketch` package's ``LogarithmicMapping``, so any quantile is returned within
``RELATIVE_ACCURACY`` (1 %) of the exact value of that rank.

The counts live in one contiguous ``array('q')`` that spans only the keys seen so far, instead of
``ddsketch``'s list of Python floats: 8 bytes per key instead of about 32. Latencies from 1 ms to
1 s cover 346 keys (about 2.8 KB); ``MAX_KEYS`` caps a sketch at 2,048 keys (16 KB) by folding the
lowest keys into one, which only loses accuracy for the fastest values, far from p50 and above.
Counts are signed so that a window can subtract a bucket that leaves it.
"""

from __future__ import annotations

import math
from array import array

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAX_KEYS = 2048

# Durations at or below this (in the caller's unit, milliseconds here) count as zero.
MIN_TRACKED_VALUE = 1e-6

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_KEY_MULTIPLIER = 1.0 / math.log(_MAPPING.gamma)


def key_for(value: float) -> int:
    """Map a positive value to its key, as ``LogarithmicMapping.key`` does, without two calls."""
    return math.ceil(math.log(value) * _KEY_MULTIPLIER)


class LatencySketch:
    """Counts of values per logarithmic key; ``add`` is O(1) except when the key range grows.

    Not thread-safe: the window that owns a sketch holds the lock.
    """

    __slots__ = ("_counts", "_offset", "count", "zero_count")

    def __init__(self) -> None:
        self._counts: array[int] = array("q")
        self._offset = 0
        self.count = 0
        self.zero_count = 0

    def add(self, value: float) -> None:
        """Add one value; values that are not positive finite numbers count as zero."""
        self.count += 1
        if not value > MIN_TRACKED_VALUE or value == math.inf:
            self.zero_count += 1
            return

        index = key_for(value) - self._offset
        if 0 <= index < len(self._counts):
            self._counts[index] += 1
            return
        self._add_outside_range(key_for(value), 1)

    def merge(self, other: LatencySketch, sign: int = 1) -> None:
        """Add ``other``'s counts to this sketch, or subtract them with ``sign=-1``."""
        self.count += sign * other.count
        self.zero_count += sign * other.zero_count
        if not other._counts:
            return

        self._ensure_range(other._offset, other._offset + len(other._counts) - 1)
        shift = other._offset - self._offset
        counts = self._counts
        for index, value in enumerate(other._counts):
            if value:
                counts[index + shift] += sign * value

    def quantiles(self, qs: tuple[float, ...]) -> tuple[float | None, ...]:
        """Return the value at each quantile in ``qs`` (ascending, 0..1), or None when empty.

        The rank of quantile q is ``q * (count - 1)``, the lower interpolation point that numpy's
        default method also starts from.
        """
        if self.count <= 0:
            return tuple(None for _ in qs)

        results: list[float | None] = []
        seen = self.zero_count
        position = 0
        counts = self._counts
        for q in qs:
            rank = q * (self.count - 1)
            if rank < self.zero_count:
                results.append(0.0)
                continue
            while seen <= rank and position < len(counts):
                seen += counts[position]
                position += 1
            results.append(self._value_at(position - 1))
        return tuple(results)

    def retained_bytes(self) -> int:
        """Estimate the memory this sketch retains, for the documented per-route bound."""
        return 64 + self._counts.buffer_info()[1] * self._counts.itemsize

    def _value_at(self, index: int) -> float:
        return float(_MAPPING.value(index + self._offset))

    def _add_outside_range(self, key: int, amount: int) -> None:
        self._ensure_range(key, key)
        index = key - self._offset
        if index < 0:
            # The range was capped and folded: the lowest key absorbs what lies below it.
            index = 0
        self._counts[index] += amount

    def _ensure_range(self, low_key: int, high_key: int) -> None:
        if not self._counts:
            span = min(high_key - low_key + 1, MAX_KEYS)
            self._offset = high_key - span + 1
            self._counts = array("q", bytes(8 * span))
            return

        current_low = self._offset
        current_high = self._offset + len(self._counts) - 1
        if low_key >= current_low and high_key <= current_high:
            return

        new_high = max(high_key, current_high)
        new_low = max(min(low_key, current_low), new_high - MAX_KEYS + 1)
        grown: array[int] = array("q", bytes(8 * (new_high - new_low + 1)))
        for index, value in enumerate(self._counts):
            key = current_low + index
            grown[max(key - new_low, 0)] += value
        self._counts = grown
        self._offset = new_low
