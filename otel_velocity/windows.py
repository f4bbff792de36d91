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
reading a window merges only the open bucket.

Memory per route, with the defaults: 97 buckets of ``LatencySketch`` (8 bytes per occupied
logarithmic key, 2,048 keys at most), three sums of the same kind, and 10 exemplars. Latencies
between 1 ms and 1 s use at most 346 keys, so a route retains at most about 280 KB and typically
20 to 60 KB; ``retained_bytes`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_velocity.exemplars import Exemplar, ExemplarSet
from otel_velocity.sketch import LatencySketch

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class WindowSettings:
    """Sizes and thresholds shared by every route window; all durations in seconds."""

    bucket_s: float = 10.0
    short_buckets: int = 6
    long_buckets: int = 30
    baseline_buckets: int = 90
    regress_threshold_pct: float = 20.0
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
    """What one route's windows show at one instant."""

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


class _Bucket:
    __slots__ = ("count", "errors", "index", "p95_ms", "sketch")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.errors = 0
        self.sketch = LatencySketch()
        self.p95_ms: float | None = None


class _Sum:
    """Counts and a sketch summed over a set of sealed buckets."""

    __slots__ = ("count", "errors", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.sketch = LatencySketch()

    def add(self, bucket: _Bucket, sign: int = 1) -> None:
        self.count += sign * bucket.count
        self.errors += sign * bucket.errors
        self.sketch.merge(bucket.sketch, sign)

    def with_open(self, bucket: _Bucket | None) -> _Sum:
        """Return a copy that also includes the open bucket."""
        combined = _Sum()
        combined.add_sum(self)
        if bucket is not None:
            combined.add(bucket)
        return combined

    def add_sum(self, other: _Sum) -> None:
        self.count += other.count
        self.errors += other.errors
        self.sketch.merge(other.sketch)


class RouteWindow:
    """The buckets, sums and exemplars of one route. Not thread-safe: the registry holds a lock."""

    def __init__(self, settings: WindowSettings, now_s: float) -> None:
        self._settings = settings
        self._buckets: list[_Bucket | None] = [None] * settings.retained_buckets
        self._current = self._bucket_index(now_s)
        self._short = _Sum()
        self._long = _Sum()
        self._baseline = _Sum()
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
        """Count one request in the bucket of ``now_s``."""
        index = self._bucket_index(now_s)
        if index > self._current:
            self._advance(index)
        elif index < self._current:
            # A clock that stepped back: count the request in the open bucket.
            index = self._current

        bucket = self._bucket(index, create=True)
        assert bucket is not None
        bucket.count += 1
        if is_error:
            bucket.errors += 1
        bucket.sketch.add(duration_ms)
        self._exemplars.offer(now_s, trace_id, span_id, duration_ms, status_code, is_error)

    def stats(self, now_s: float, observed_since_s: float) -> WindowStats:
        """Compute the windows at ``now_s``; ``observed_since_s`` is when counting began.

        Rates divide by the time the window covers, but never by more than the time since
        ``observed_since_s``, so a process that started 5 seconds ago does not report a tenth
        of its real rate.
        """
        settings = self._settings
        index = self._bucket_index(now_s)
        if index > self._current:
            self._advance(index)
        open_bucket = self._bucket(index, create=False)

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
        (baseline_p95_ms,) = self._baseline.sketch.quantiles((0.95,))
        regress_pct = _regress_pct(p95_ms, baseline_p95_ms)
        is_regress = (
            regress_pct is not None
            and regress_pct >= settings.regress_threshold_pct
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
            trend=self._trend(now_s, index, observed_since_s),
            exemplars=self._exemplars.snapshot(now_s),
        )

    def is_idle(self, now_s: float) -> bool:
        """Return whether no request reached this route within the retained history."""
        index = self._bucket_index(now_s)
        return index - self._current >= self._settings.retained_buckets

    def retained_bytes(self) -> int:
        """Estimate the memory held by the buckets and sums, for the documented bound."""
        sketches = [b.sketch for b in self._buckets if b is not None]
        sketches += [self._short.sketch, self._long.sketch, self._baseline.sketch]
        bucket_overhead = 120 * sum(1 for b in self._buckets if b is not None)
        return sum(s.retained_bytes() for s in sketches) + bucket_overhead + 8 * len(self._buckets)

    def _bucket_index(self, now_s: float) -> int:
        return int(now_s // self._settings.bucket_s)

    def _bucket(self, index: int, create: bool) -> _Bucket | None:
        slot = index % len(self._buckets)
        bucket = self._buckets[slot]
        if bucket is not None and bucket.index == index:
            return bucket
        if not create:
            return None
        bucket = _Bucket(index)
        self._buckets[slot] = bucket
        return bucket

    def _advance(self, new_index: int) -> None:
        """Seal every bucket up to ``new_index - 1`` and move the sums along."""
        settings = self._settings
        if new_index - self._current >= settings.retained_buckets:
            self._reset(new_index)
            return

        while self._current < new_index:
            sealed = self._bucket(self._current, create=False)
            if sealed is not None:
                (sealed.p95_ms,) = sealed.sketch.quantiles((0.95,))
                self._short.add(sealed)
                self._long.add(sealed)
            self._current += 1
            self._retire(self._current - settings.short_buckets, self._short, self._baseline)
            self._retire(self._current - settings.long_buckets, self._long, None)
            self._retire(
                self._current - settings.short_buckets - settings.baseline_buckets,
                self._baseline,
                None,
            )

    def _retire(self, index: int, source: _Sum, destination: _Sum | None) -> None:
        bucket = self._bucket(index, create=False)
        if bucket is None:
            return
        source.add(bucket, -1)
        if destination is not None:
            destination.add(bucket)

    def _reset(self, new_index: int) -> None:
        self._buckets = [None] * self._settings.retained_buckets
        self._short = _Sum()
        self._long = _Sum()
        self._baseline = _Sum()
        self._current = new_index

    def _trend(self, now_s: float, index: int, observed_since_s: float) -> list[TrendPoint]:
        settings = self._settings
        points = []
        for offset in range(settings.long_buckets - 1, -1, -1):
            bucket_index = index - offset
            start_s = bucket_index * settings.bucket_s
            if start_s + settings.bucket_s <= observed_since_s:
                continue
            bucket = self._bucket(bucket_index, create=False)
            covered_s = min(now_s, start_s + settings.bucket_s) - max(start_s, observed_since_s)
            covered_s = max(covered_s, 1.0)
            if bucket is None:
                points.append(TrendPoint(start_s, 0.0, None, 0.0))
                continue
            p95_ms = bucket.p95_ms if offset else bucket.sketch.quantiles((0.95,))[0]
            points.append(
                TrendPoint(
                    start_s,
                    bucket.count / covered_s,
                    p95_ms,
                    _ratio(bucket.errors, bucket.count),
                )
            )
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
