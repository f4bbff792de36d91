"""Quantile accuracy of the windows against exact quantiles and a Prometheus-style histogram.

Samples go through ``VelocityRegistry.record`` with an injected clock, spread evenly over the
60 seconds of the short window (five sealed buckets and the open one), and p50/p95/p99 are read
from ``registry.rows()``. The exact figures are numpy's ``quantile`` with its default linear
interpolation and with ``method="lower"``, the sample at rank ``floor(q * (n - 1))`` that the
sketch's documentation names.

Beside them, what ``histogram_quantile`` would report from a histogram with the default
explicit bucket boundaries of the OpenTelemetry SDK (0, 5, 10, 25, 50, 75, 100, 250, 500, 750,
1000, 2500, 5000, 7500 and 10000 ms): Prometheus's algorithm, linear interpolation inside the
bucket that contains the rank, and the highest finite boundary for a rank in the +Inf bucket.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

import numpy as np

from benchmarks.common import Section, Table, Target
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import RouteKey

QUANTILES = (0.5, 0.95, 0.99)
TARGET_RELATIVE_ERROR = 0.01
OTEL_DEFAULT_BOUNDARIES_MS = (
    0,
    5,
    10,
    25,
    50,
    75,
    100,
    250,
    500,
    750,
    1000,
    2500,
    5000,
    7500,
    10000,
)
START_S = 1_000_000.0  # A multiple of the 10 s bucket.
KEY = RouteKey("GET", "/items/{item_id}")


class SteppingClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def lognormal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw latencies around 50 ms with a long right tail (sigma 0.8)."""
    return rng.lognormal(np.log(50.0), 0.8, size)


def bimodal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw latencies of 80 % cache hits around 8 ms and 20 % misses around 300 ms."""
    hits = rng.lognormal(np.log(8.0), 0.3, size)
    misses = rng.lognormal(np.log(300.0), 0.3, size)
    return np.where(rng.random(size) < 0.8, hits, misses)


def pareto(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw latencies with a heavy tail: Pareto with shape 1.5 and a 10 ms minimum."""
    return (rng.pareto(1.5, size) + 1.0) * 10.0


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "lognormal": lognormal,
    "bimodal": bimodal,
    "pareto": pareto,
}


def window_quantiles(samples: np.ndarray) -> tuple[float, float, float]:
    """Record ``samples`` over one short window and return its p50, p95 and p99."""
    clock = SteppingClock(START_S)
    registry = VelocityRegistry(clock=clock)
    per_second = np.array_split(samples, 60)
    for second, chunk in enumerate(per_second):
        clock.now_s = START_S + second
        for duration_ms in chunk.tolist():
            registry.record("shop", KEY, duration_ms, False, 200)
    clock.now_s = START_S + 59.5
    (row,) = registry.rows()
    window = row.window
    assert window.count == len(samples)
    assert window.p50_ms is not None
    assert window.p95_ms is not None
    assert window.p99_ms is not None
    return window.p50_ms, window.p95_ms, window.p99_ms


def histogram_quantile(
    q: float, samples: np.ndarray, boundaries: tuple[float, ...] = OTEL_DEFAULT_BOUNDARIES_MS
) -> float:
    """Return Prometheus's ``histogram_quantile(q, ...)`` of ``samples`` in these buckets."""
    # Cumulative counts per upper boundary (le semantics: value <= boundary), then +Inf.
    cumulative = [int(np.count_nonzero(samples <= bound)) for bound in boundaries]
    cumulative.append(len(samples))
    rank = q * len(samples)
    bucket = bisect_left(cumulative, rank)
    if bucket == len(boundaries):  # The +Inf bucket: Prometheus returns the last finite bound.
        return float(boundaries[-1])
    upper = float(boundaries[bucket])
    if bucket == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0
    else:
        lower, below = float(boundaries[bucket - 1]), cumulative[bucket - 1]
    in_bucket = cumulative[bucket] - below
    return lower + (upper - lower) * (rank - below) / in_bucket


def measure(size: int, seeds: int) -> list[dict[str, object]]:
    results = []
    for name, draw in DISTRIBUTIONS.items():
        for seed in range(seeds):
            samples = draw(np.random.default_rng(seed), size)
            sketch = window_quantiles(samples)
            exact = np.quantile(samples, QUANTILES)
            lower = np.quantile(samples, QUANTILES, method="lower")
            histogram = [histogram_quantile(q, samples) for q in QUANTILES]
            results.append(
                {
                    "distribution": name,
                    "size": size,
                    "seed": seed,
                    "exact": exact.tolist(),
                    "lower": lower.tolist(),
                    "sketch": list(sketch),
                    "histogram": histogram,
                }
            )
    return results


def _relative(estimate: float, exact: float) -> float:
    return abs(estimate - exact) / exact


def run(quick: bool) -> Section:
    sizes = (1_000, 20_000) if quick else (1_000, 60_000)
    seeds = 2 if quick else 5
    results = [result for size in sizes for result in measure(size, seeds)]

    table = Table(
        f"Quantiles from the 1-minute window vs exact (numpy, linear), worst of {seeds} seeds",
        [
            "distribution",
            "samples",
            "exact p50 / p95 / p99 (seed 0)",
            "window: max relative error p50 / p95 / p99",
            "vs numpy 'lower'",
            "OTel-bucket histogram: max error p50 / p95 / p99",
        ],
    )
    worst_sketch = 0.0
    worst_lower = 0.0
    for name in DISTRIBUTIONS:
        for size in sizes:
            group = [r for r in results if r["distribution"] == name and r["size"] == size]
            errors = {kind: [0.0, 0.0, 0.0] for kind in ("sketch", "lower", "histogram")}
            for result in group:
                for index in range(len(QUANTILES)):
                    exact = result["exact"][index]  # type: ignore[index]
                    sketch = result["sketch"][index]  # type: ignore[index]
                    lower = result["lower"][index]  # type: ignore[index]
                    histogram = result["histogram"][index]  # type: ignore[index]
                    errors["sketch"][index] = max(errors["sketch"][index], _relative(sketch, exact))
                    errors["lower"][index] = max(errors["lower"][index], _relative(sketch, lower))
                    errors["histogram"][index] = max(
                        errors["histogram"][index], _relative(histogram, exact)
                    )
            worst_sketch = max(worst_sketch, *errors["sketch"])
            worst_lower = max(worst_lower, *errors["lower"])
            exact_seed0 = group[0]["exact"]
            table.add(
                name,
                f"{size:,}",
                " / ".join(f"{value:.1f} ms" for value in exact_seed0),  # type: ignore[attr-defined]
                " / ".join(f"{100 * e:.2f} %" for e in errors["sketch"]),
                " / ".join(f"{100 * e:.2f} %" for e in errors["lower"]),
                " / ".join(f"{100 * e:.1f} %" for e in errors["histogram"]),
            )

    targets = [
        Target(
            "p50/p95/p99 within 1 % of the sample at the rank (numpy 'lower'), every case",
            f"worst {100 * worst_lower:.2f} %",
            worst_lower <= TARGET_RELATIVE_ERROR,
        ),
        Target(
            "p50/p95/p99 within 1 % of numpy's default (linear interpolation), every case",
            f"worst {100 * worst_sketch:.2f} %",
            worst_sketch <= TARGET_RELATIVE_ERROR,
        ),
    ]
    return Section("accuracy", tables=[table], raw={"results": results}, targets=targets)
