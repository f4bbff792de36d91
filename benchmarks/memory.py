"""Memory retained per route after 16 minutes of traffic, and process RSS with 1,000 routes.

Traffic goes straight into ``VelocityRegistry.record`` with an injected clock that steps one
second at a time, so 16 minutes take seconds. Latencies are lognormal (median 30 ms, sigma
0.9) with 1 % from a slow mode (median 600 ms), which spreads each 10 s bucket over 150 to 350
of the sketch's logarithmic keys, depending on the request rate.

Per route, two figures: ``VelocityRegistry.retained_bytes()`` (the library's own estimate of
sketch and bucket storage) and the growth of traced memory under ``tracemalloc`` from an empty
registry, after a garbage collection, which also counts route keys, windows, exemplars and
dictionaries. RSS is measured in a fresh subprocess from /proc/self/status (VmRSS), before
and after filling 1,000 routes.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc

import numpy as np

from benchmarks.common import Section, Table, Target
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import RouteKey

TARGET_BYTES_PER_ROUTE = 64 * 1024
HISTORY_S = 16 * 60
START_S = 1_000_000.0


class SteppingClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def latencies_ms(rng: np.random.Generator, size: int | tuple[int, int]) -> np.ndarray:
    """Draw request latencies: lognormal around 30 ms, 1 % from a slow mode around 600 ms."""
    fast = rng.lognormal(np.log(30.0), 0.9, size)
    slow = rng.lognormal(np.log(600.0), 0.5, size)
    return np.where(rng.random(size) < 0.01, slow, fast)


def fill(
    registry: VelocityRegistry,
    clock: SteppingClock,
    routes: int,
    rps: int,
    seconds: int = HISTORY_S,
) -> None:
    """Record ``seconds`` of ``rps`` requests per second on each of ``routes``."""
    rng = np.random.default_rng(routes * 1000 + rps)
    keys = [RouteKey("GET", f"/api/v1/resource{number}/{{id}}") for number in range(routes)]
    record = registry.record
    for second in range(seconds):
        clock.now_s = START_S + second
        durations = latencies_ms(rng, (routes, rps)).tolist()
        errors = (rng.random((routes, rps)) < 0.01).tolist()
        for key, route_durations, route_errors in zip(keys, durations, errors, strict=True):
            for duration_ms, is_error in zip(route_durations, route_errors, strict=True):
                record("shop", key, duration_ms, is_error, 500 if is_error else 200, 1, 2)


def measure_per_route(routes: int, rps: int) -> dict[str, float]:
    # A short untimed fill first, so that modules imported on first use are not counted.
    warm_up_clock = SteppingClock(START_S)
    fill(VelocityRegistry(clock=warm_up_clock), warm_up_clock, 1, rps, seconds=30)

    clock = SteppingClock(START_S)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        registry = VelocityRegistry(clock=clock)
        fill(registry, clock, routes, rps)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return {
        "routes": routes,
        "rps": rps,
        "retained_bytes_per_route": registry.retained_bytes() / routes,
        "tracemalloc_bytes_per_route": traced / routes,
    }


RSS_SCRIPT = """
import json, sys
from benchmarks.memory import SteppingClock, START_S, fill, rss_bytes
from otel_velocity.registry import VelocityRegistry
routes, rps = int(sys.argv[1]), int(sys.argv[2])
before = rss_bytes()
clock = SteppingClock(START_S)
registry = VelocityRegistry(clock=clock)
fill(registry, clock, routes, rps)
rows = registry.rows()
print(json.dumps({"before": before, "after": rss_bytes(), "rows": len(rows)}))
"""


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def measure_rss(routes: int, rps: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(routes), str(rps)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "routes": routes,
        "rps": rps,
        "rss_before_bytes": figures["before"],
        "rss_after_bytes": figures["after"],
        "rss_per_route_bytes": (figures["after"] - figures["before"]) / routes,
        "rows": figures["rows"],
    }


def run(quick: bool) -> Section:
    levels = [(10, 1), (10, 10), (5, 100)] if quick else [(50, 1), (50, 10), (20, 100)]
    per_route = [measure_per_route(routes, rps) for routes, rps in levels]
    rss = measure_rss(200 if quick else 1000, 2)

    table = Table(
        "Memory per route after 16 minutes of traffic",
        ["requests/s per route", "routes", "retained_bytes() per route", "tracemalloc per route"],
    )
    for figures in per_route:
        table.add(
            figures["rps"],
            figures["routes"],
            f"{figures['retained_bytes_per_route'] / 1024:.1f} KB",
            f"{figures['tracemalloc_bytes_per_route'] / 1024:.1f} KB",
        )
    rss_table = Table(
        "Process RSS (fresh interpreter, registry only)",
        ["routes", "requests/s per route", "RSS before", "RSS after", "per route"],
    )
    rss_table.add(
        rss["routes"],
        rss["rps"],
        f"{rss['rss_before_bytes'] / 2**20:.1f} MB",
        f"{rss['rss_after_bytes'] / 2**20:.1f} MB",
        f"{rss['rss_per_route_bytes'] / 1024:.1f} KB",
    )

    worst = max(figures["tracemalloc_bytes_per_route"] for figures in per_route)
    targets = [
        Target(
            "≤ 64 KB per route (tracemalloc, highest of the rates measured)",
            f"{worst / 1024:.1f} KB",
            worst <= TARGET_BYTES_PER_ROUTE,
        )
    ]
    return Section(
        "memory",
        tables=[table, rss_table],
        raw={"per_route": per_route, "rss": rss},
        targets=targets,
    )
