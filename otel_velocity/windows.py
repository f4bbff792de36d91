"""Sliding time windows of request counts, errors and latency sketches for one route.

Time is cut into buckets of ``bucket_s`` seconds (10 s by default) on the clock the caller passes
in; nothing here reads the system clock. The newest bucket is open, the others are sealed. From
the buckets a window derives:

* the short window (1 minute): the open bucket and the 5 sealed buckets before it, so it spans
  between 50 and 60 seconds; RPS, p50/p95/p99 and error rate come from it;
* the long window (5 minutes): the open bucket and the 29 before it; RPS, p95 and error rate, and
  the trend, one point per bucket, for sparklines;
* the baseline (15 minutes): the 90 sealed buckets right before the short window. ``regress_pct``
  compares the short window's p95 with the baseline's, and ``is_regress`` is set only when it
  reaches the threshold and both windows hold at least ``min_samples`` requests.

Sums over sealed buckets are kept incrementally: when a bucket is sealed it is added to the short
and long sums, and buckets are moved or subtracted as they leave a window. Each bucket takes part
in six sketch merges in its life, so the cost of a window is amortized O(1) per request, and
reading a window copies the short and long sums and merges only the open bucket into them.

Memory per route, with the defaults: the open bucket's ``LatencySketch`` (8 bytes per key of its
range), a ring of 97 slots of 40 bytes for the counts and p95 of up to 96 sealed buckets, each
with a ``FrozenSketch`` of 65 bytes and 1 byte per key of its range while no key holds more than
255 requests (2 bytes up to 65,535), three sums (8 bytes per key of their range, 2,048 keys at
most) and 10 exemplars. Latencies between 1 ms and 1 s span at most 346 keys, so such a route
retains at most about 90 KB, an estimate from 96 * (105 + 2 * 346) + 4 * 8 * 346 bytes.
``python -m benchmarks --only memory`` measured 37, 50 and 59 KB per route (tracemalloc) at 1,
10 and 100 requests per second with lognormal latencies; ``retained_bytes`` estimates it.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from otel_velocity.exemplars import Exemplar, ExemplarSet
from otel_velocity.sketch import FrozenSketch, LatencySketch

QUANTILES = (0.5, 0.95, 0.99)

# Marks an empty slot of the sealed-bucket ring; no clock reaches this bucket number.
_NO_BUCKET = -(2**63)
# The size of a bytes object before its content (CPython 3.11, 64-bit).
_BYTES_HEADER = 33


@dataclass(frozen=True)
class WindowSettings:
    """Sizes and thresholds shared by every route window; all durations in seconds."""

    bucket_s: float = 10.0
    short_buckets: int = 6
    long_buckets: int = 30
    baseline_buckets: int = 90
    regress_threshold_pct: float = 20.0
    # A p95 that moves by less than this many milliseconds is never a regression: from 2 ms to
    # 3 ms is +50 % but scheduling noise, not a slower route.
    regress_min_delta_ms: float = 5.0
    min_samples: int = 50
    exemplars_per_kind: int = 5

    def __post_init__(self) -> None:
        if self.bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {self.bucket_s!r}")
        if not 1 <= self.short_buckets <= self.long_buckets:
            raise ValueError(
                f"short_buckets must be between 1 and long_buckets ({self.long_buckets}), "
                f"got {self.short_buckets!r}"
            )
        if self.baseline_buckets < 1:
            raise ValueError(f"baseline_buckets must be at least 1, got {self.baseline_buckets!r}")
        if not self.regress_min_delta_ms >= 0:
            raise ValueError(
                f"regress_min_delta_ms must be 0 or more, got {self.regress_min_delta_ms!r}"
            )
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {self.min_samples!r}")

    @property
    def short_window_s(self) -> float:
        return self.short_buckets * self.bucket_s

    @property
    def long_window_s(self) -> float:
        return self.long_buckets * self.bucket_s

    @property
    def baseline_window_s(self) -> float:
        return self.baseline_buckets * self.bucket_s

    @property
    def retained_buckets(self) -> int:
        """Buckets kept per route, so the oldest baseline bucket lives until it is subtracted."""
        return max(self.short_buckets + self.baseline_buckets, self.long_buckets) + 1


@dataclass(frozen=True, slots=True)
class TrendPoint:
    time_s: float
    rps: float
    p95_ms: float | None
    err_rate: float


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of one route's windows at one instant."""

    rps: float
    rps_5m: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p95_5m_ms: float | None
    err_rate: float
    err_rate_5m: float
    count: int
    errors: int
    count_5m: int
    errors_5m: int
    baseline_p95_ms: float | None
    baseline_count: int
    regress_pct: float | None
    is_regress: bool
    trend: list[TrendPoint] = field(default_factory=list)
    exemplars: list[Exemplar] = field(default_factory=list)


class _OpenBucket:
    """The bucket that receives requests now, with a sketch that can still grow."""

    __slots__ = ("count", "errors", "index", "sketch")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.errors = 0
        self.sketch = LatencySketch()


class _SealedBuckets:
    """Sealed buckets in a ring indexed by bucket number modulo ``size``.

    Counts, errors and p95 sit in parallel arrays, and each sketch is frozen. A sealed bucket
    therefore costs 40 bytes plus a ``FrozenSketch``: 33 bytes of object header, a 32-byte
    header and 1 byte per key in its range while no key counts more than 255 requests.
    """

    __slots__ = ("counts", "errors", "indexes", "p95_ms", "size", "sketches")

    def __init__(self, size: int) -> None:
        self.size = size
        self.indexes: array[int] = array("q", [_NO_BUCKET]) * size
        self.counts: array[int] = array("q", bytes(8 * size))
        self.errors: array[int] = array("q", bytes(8 * size))
        self.p95_ms: array[float] = array("d", [math.nan]) * size
        self.sketches: list[FrozenSketch | None] = [None] * size

    def slot(self, index: int) -> int | None:
        """Return the ring slot of bucket ``index``, or None when the ring lacks that bucket."""
        slot = index % self.size
        return slot if self.indexes[slot] == index else None

    def store(self, bucket: _OpenBucket, p95_ms: float | None) -> None:
        slot = bucket.index % self.size
        self.indexes[slot] = bucket.index
        self.counts[slot] = bucket.count
        self.errors[slot] = bucket.errors
        self.p95_ms[slot] = math.nan if p95_ms is None else p95_ms
        self.sketches[slot] = bucket.sketch.freeze()

    def retained_bytes(self) -> int:
        arrays = 8 * 4 * self.size + 8 * self.size
        return arrays + sum(_BYTES_HEADER + len(s) for s in self.sketches if s is not None)


class _Sum:
    """Counts and a sketch summed over a set of sealed buckets."""

    __slots__ = ("count", "errors", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.sketch = LatencySketch()

    def add_open(self, bucket: _OpenBucket) -> None:
        self.count += bucket.count
        self.errors += bucket.errors
        self.sketch.merge(bucket.sketch)

    def add_sealed(self, sealed: _SealedBuckets, slot: int, sign: int = 1) -> None:
        self.count += sign * sealed.counts[slot]
        self.errors += sign * sealed.errors[slot]
        sketch = sealed.sketches[slot]
        assert sketch is not None
        self.sketch.merge_frozen(sketch, sign)

    def with_open(self, bucket: _OpenBucket | None) -> _Sum:
        """Return a copy that also includes the open bucket."""
        combined = _Sum()
        combined.count = self.count
        combined.errors = self.errors
        combined.sketch = self.sketch.copy()
        if bucket is not None:
            combined.add_open(bucket)
        return combined


class RouteWindow:
    """The buckets, sums and exemplars of one route. Not thread-safe: the registry holds a lock."""

    def __init__(self, settings: WindowSettings, now_s: float) -> None:
        self._settings = settings
        self._bucket_s = settings.bucket_s
        self._sealed = _SealedBuckets(settings.retained_buckets)
        self._current = self._bucket_index(now_s)
        self._open: _OpenBucket | None = None
        self._short = _Sum()
        self._long = _Sum()
        self._baseline = _Sum()
        self._baseline_p95: float | None = None
        self._baseline_p95_at: int | None = None
        self._exemplars = ExemplarSet(settings.exemplars_per_kind, settings.long_window_s)

    def record(
        self,
        now_s: float,
        duration_ms: float,
        is_error: bool,
        status_code: int | None,
        trace_id: int,
        span_id: int,
    ) -> None:
        """Count one request in the open bucket, the bucket of ``now_s``.

        A request from a clock that stepped back is counted in the open bucket too.
        """
        index = int(now_s // self._bucket_s)
        if index > self._current:
            self._advance(index)

        bucket = self._open
        if bucket is None:
            bucket = self._open = _OpenBucket(self._current)
        bucket.count += 1
        if is_error:
            bucket.errors += 1
        bucket.sketch.add(duration_ms)

        exemplars = self._exemplars
        if is_error or duration_ms > exemplars.floor_ms or now_s > exemplars.refresh_after_s:
            exemplars.offer(now_s, trace_id, span_id, duration_ms, status_code, is_error)

    def trend(self, now_s: float, observed_since_s: float) -> list[TrendPoint]:
        """Compute only the trend at ``now_s``, for rows whose other stats were read without it."""
        index = self._bucket_index(now_s)
        if index > self._current:
            self._advance(index)
        return self._trend(now_s, self._current, observed_since_s)

    def stats(
        self, now_s: float, observed_since_s: float, include_trend: bool = True
    ) -> WindowStats:
        """Compute the windows at ``now_s``; ``observed_since_s`` is when counting began.

        Rates divide by the time the window covers, but never by more than the time since
        ``observed_since_s``, so a process that started 5 seconds ago does not report a tenth
        of its real rate. A ``now_s`` from a clock that stepped back reads the open bucket.
        Without ``include_trend`` the trend is left empty: it is half the cost of a read.
        """
        settings = self._settings
        index = self._bucket_index(now_s)
        if index > self._current:
            self._advance(index)
        index = self._current
        open_bucket = self._open

        short = self._short.with_open(open_bucket)
        long = self._long.with_open(open_bucket)
        bucket_start_s = index * settings.bucket_s
        short_covered_s = _covered_s(
            now_s, bucket_start_s, settings.short_buckets, settings, observed_since_s
        )
        long_covered_s = _covered_s(
            now_s, bucket_start_s, settings.long_buckets, settings, observed_since_s
        )

        p50_ms, p95_ms, p99_ms = short.sketch.quantiles(QUANTILES)
        (p95_5m_ms,) = long.sketch.quantiles((0.95,))
        baseline_p95_ms = self._baseline_p95_ms()
        regress_pct = _regress_pct(p95_ms, baseline_p95_ms)
        is_regress = (
            regress_pct is not None
            and regress_pct >= settings.regress_threshold_pct
            and p95_ms is not None
            and baseline_p95_ms is not None
            and p95_ms - baseline_p95_ms >= settings.regress_min_delta_ms
            and short.count >= settings.min_samples
            and self._baseline.count >= settings.min_samples
        )

        return WindowStats(
            rps=short.count / short_covered_s,
            rps_5m=long.count / long_covered_s,
            p50_ms=p50_ms,
            p95_ms=p95_ms,
            p99_ms=p99_ms,
            p95_5m_ms=p95_5m_ms,
            err_rate=_ratio(short.errors, short.count),
            err_rate_5m=_ratio(long.errors, long.count),
            count=short.count,
            errors=short.errors,
            count_5m=long.count,
            errors_5m=long.errors,
            baseline_p95_ms=baseline_p95_ms,
            baseline_count=self._baseline.count,
            regress_pct=regress_pct,
            is_regress=is_regress,
            trend=self._trend(now_s, index, observed_since_s) if include_trend else [],
            exemplars=self._exemplars.snapshot(now_s),
        )

    def is_idle(self, now_s: float) -> bool:
        """Return whether no request reached this route within the retained history."""
        index = self._bucket_index(now_s)
        return index - self._current >= self._settings.retained_buckets

    def retained_bytes(self) -> int:
        """Estimate the memory held by the buckets and sums, for the documented bound."""
        sums = [self._short.sketch, self._long.sketch, self._baseline.sketch]
        if self._open is not None:
            sums.append(self._open.sketch)
        return sum(s.retained_bytes() for s in sums) + self._sealed.retained_bytes()

    def _bucket_index(self, now_s: float) -> int:
        return int(now_s // self._bucket_s)

    def _baseline_p95_ms(self) -> float | None:
        """Return the baseline's p95, computed once per bucket: the baseline moves only then."""
        if self._baseline_p95_at != self._current:
            (self._baseline_p95,) = self._baseline.sketch.quantiles((0.95,))
            self._baseline_p95_at = self._current
        return self._baseline_p95

    def _advance(self, new_index: int) -> None:
        """Seal every bucket up to ``new_index - 1`` and move the sums along."""
        settings = self._settings
        if new_index - self._current >= settings.retained_buckets:
            self._reset(new_index)
            return

        while self._current < new_index:
            self._seal()
            self._current += 1
            self._retire(self._current - settings.short_buckets, self._short, self._baseline)
            self._retire(self._current - settings.long_buckets, self._long, None)
            self._retire(
                self._current - settings.short_buckets - settings.baseline_buckets,
                self._baseline,
                None,
            )

    def _seal(self) -> None:
        bucket = self._open
        if bucket is None:
            return
        (p95_ms,) = bucket.sketch.quantiles((0.95,))
        self._short.add_open(bucket)
        self._long.add_open(bucket)
        self._sealed.store(bucket, p95_ms)
        self._open = None

    def _retire(self, index: int, source: _Sum, destination: _Sum | None) -> None:
        slot = self._sealed.slot(index)
        if slot is None:
            return
        source.add_sealed(self._sealed, slot, -1)
        if destination is not None:
            destination.add_sealed(self._sealed, slot)

    def _reset(self, new_index: int) -> None:
        self._sealed = _SealedBuckets(self._settings.retained_buckets)
        self._open = None
        self._short = _Sum()
        self._long = _Sum()
        self._baseline = _Sum()
        self._baseline_p95_at = None
        self._current = new_index

    def _trend(self, now_s: float, index: int, observed_since_s: float) -> list[TrendPoint]:
        # The loop body is kept flat (no helper calls): it runs once per bucket of the long
        # window for every row of the table, and dominates ``stats``.
        bucket_s = self._bucket_s
        sealed = self._sealed
        ring_size = sealed.size
        indexes, counts, errors, p95s = sealed.indexes, sealed.counts, sealed.errors, sealed.p95_ms
        points = []
        for offset in range(self._settings.long_buckets - 1, -1, -1):
            bucket_index = index - offset
            start_s = bucket_index * bucket_s
            end_s = start_s + bucket_s
            if end_s <= observed_since_s:
                continue
            covered_s = (now_s if now_s < end_s else end_s) - (
                start_s if start_s > observed_since_s else observed_since_s
            )
            if covered_s < 1.0:
                covered_s = 1.0

            if offset == 0:
                bucket = self._open
                if bucket is None:
                    points.append(TrendPoint(start_s, 0.0, None, 0.0))
                    continue
                (p95_ms,) = bucket.sketch.quantiles((0.95,))
                count, error_count = bucket.count, bucket.errors
            else:
                slot = bucket_index % ring_size
                if indexes[slot] != bucket_index:
                    points.append(TrendPoint(start_s, 0.0, None, 0.0))
                    continue
                stored_p95_ms = p95s[slot]
                # NaN marks a bucket without a p95, and is the only value unequal to itself.
                p95_ms = stored_p95_ms if stored_p95_ms == stored_p95_ms else None
                count, error_count = counts[slot], errors[slot]
            err_rate = error_count / count if count else 0.0
            points.append(TrendPoint(start_s, count / covered_s, p95_ms, err_rate))
        return points


def _covered_s(
    now_s: float,
    open_bucket_start_s: float,
    buckets: int,
    settings: WindowSettings,
    observed_since_s: float,
) -> float:
    window_start_s = open_bucket_start_s - (buckets - 1) * settings.bucket_s
    return max(now_s - max(window_start_s, observed_since_s), 1.0)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _regress_pct(current_ms: float | None, baseline_ms: float | None) -> float | None:
    if current_ms is None or baseline_ms is None or baseline_ms <= 0:
        return None
    return (current_ms / baseline_ms - 1.0) * 100.0
