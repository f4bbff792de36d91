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

A sketch that will not change again can be frozen into a ``FrozenSketch``: a bytes object with the
counts in the narrowest unsigned type that holds them (1 byte per key while no key counts more
than 255), which can still be merged into or subtracted from a sketch.
"""

from __future__ import annotations

import math
import operator
import struct
from array import array
from bisect import bisect_right
from itertools import accumulate

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAX_KEYS = 2048

# Durations at or below this (in the caller's unit, milliseconds here) count as zero.
MIN_TRACKED_VALUE = 1e-6

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_KEY_MULTIPLIER = 1.0 / math.log(_MAPPING.gamma)
_log = math.log
_ceil = math.ceil
_INF = math.inf

# A frozen sketch: lowest key, count, zero count, array typecode (padded to 8 bytes), then counts.
FrozenSketch = bytes
_FROZEN_HEADER = struct.Struct("<qqq8s")
# Unsigned typecodes from narrowest to widest, with the largest count each holds.
_FROZEN_TYPECODES = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFF_FFFF), ("Q", 0xFFFF_FFFF_FFFF_FFFF))


def key_for(value: float) -> int:
    """Map a positive value to its key, as ``LogarithmicMapping.key`` does, without two calls."""
    return _ceil(_log(value) * _KEY_MULTIPLIER)


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
        # NaN fails the first comparison, so it counts as zero too.
        if value > MIN_TRACKED_VALUE and value != _INF:
            key = _ceil(_log(value) * _KEY_MULTIPLIER)
            index = key - self._offset
            counts = self._counts
            if 0 <= index < len(counts):
                counts[index] += 1
            else:
                self._add_outside_range(key, 1)
            return
        self.zero_count += 1

    def merge(self, other: LatencySketch, sign: int = 1) -> None:
        """Add ``other``'s counts to this sketch, or subtract them with ``sign=-1``."""
        self.count += sign * other.count
        self.zero_count += sign * other.zero_count
        self._merge_counts(other._offset, other._counts, sign)

    def copy(self) -> LatencySketch:
        """Return an independent sketch with the same counts."""
        duplicate = LatencySketch()
        duplicate._counts = array("q", self._counts)
        duplicate._offset = self._offset
        duplicate.count = self.count
        duplicate.zero_count = self.zero_count
        return duplicate

    def freeze(self) -> FrozenSketch:
        """Return this sketch's counts as a ``FrozenSketch`` for ``merge_frozen``.

        Raises OverflowError when a count is negative, as in a sum that had more subtracted than
        added: the frozen counts are unsigned, so only sketches of added values can be frozen.
        """
        counts = self._counts
        largest = max(counts) if counts else 0
        typecode = next(code for code, limit in _FROZEN_TYPECODES if largest <= limit)
        header = _FROZEN_HEADER.pack(self._offset, self.count, self.zero_count, typecode.encode())
        return header + array(typecode, counts).tobytes()

    def merge_frozen(self, frozen: FrozenSketch, sign: int = 1) -> None:
        """Add the counts of a ``FrozenSketch`` to this sketch, or subtract them (``sign=-1``)."""
        offset, count, zero_count, typecode = _FROZEN_HEADER.unpack_from(frozen)
        self.count += sign * count
        self.zero_count += sign * zero_count
        counts = array(typecode.rstrip(b"\0").decode())
        counts.frombytes(memoryview(frozen)[_FROZEN_HEADER.size :])
        self._merge_counts(offset, counts, sign)

    def quantiles(self, qs: tuple[float, ...]) -> tuple[float | None, ...]:
        """Return the value at each quantile in ``qs`` (0..1), or None when empty.

        The rank of quantile q is ``q * (count - 1)``, the lower interpolation point that numpy's
        default method also starts from. The value returned is that of the first key whose
        cumulative count exceeds the rank.
        """
        if self.count <= 0:
            return tuple(None for _ in qs)

        cumulative = list(accumulate(self._counts, initial=self.zero_count))
        last_index = len(cumulative) - 2
        results: list[float | None] = []
        for q in qs:
            rank = q * (self.count - 1)
            if rank < self.zero_count:
                results.append(0.0)
                continue
            # cumulative[i + 1] is the count up to and including key index i.
            index = bisect_right(cumulative, rank, lo=1) - 1
            results.append(self._value_at(min(index, last_index)))
        return tuple(results)

    def retained_bytes(self) -> int:
        """Estimate the memory this sketch retains, for the documented per-route bound."""
        return 64 + self._counts.buffer_info()[1] * self._counts.itemsize

    def _value_at(self, index: int) -> float:
        return float(_MAPPING.value(index + self._offset))

    def _merge_counts(self, offset: int, other: array[int], sign: int) -> None:
        """Add ``sign`` times ``other``, whose first element counts key ``offset``."""
        if not other:
            return
        if sign == 1:
            operation = operator.add
        elif sign == -1:
            operation = operator.sub
        else:
            raise ValueError(f"sign must be 1 or -1, got {sign!r}")

        self._ensure_range(offset, offset + len(other) - 1)
        start = offset - self._offset
        if start < 0:
            # The range was capped and folded: the lowest key absorbs what lies below it.
            self._counts[0] += sign * sum(other[:-start])
            other = other[-start:]
            start = 0
        end = start + len(other)
        counts = self._counts
        # A list first: array() fills from a sized list faster than from an iterator.
        counts[start:end] = array("q", list(map(operation, counts[start:end], other)))

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
        shift = current_low - new_low
        if shift >= 0:
            grown[shift : shift + len(self._counts)] = self._counts
        else:
            # The new range starts above the old one: fold the keys below it into its lowest.
            grown[0] = sum(self._counts[: -shift + 1])
            grown[1 : len(self._counts) + shift] = self._counts[-shift + 1 :]
        self._counts = grown
        self._offset = new_low
