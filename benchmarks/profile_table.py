"""Split the time of ``GET /ops/velocity`` into its layers, in-process.

``python -m benchmarks.profile_table --routes 1000`` fills a registry as benchmarks/ingest.py
does (16 minutes of history, one request per second per route) and times, as medians of
``--repeats`` runs:

* ``VelocityRegistry.rows()``, which computes the windows of every route, also with the garbage
  collector off, to show what its collections triggered by the many new objects cost;
* the same with the 5-minute trend left out (``RouteWindow._trend`` replaced by an empty list),
  to show the trend's share;
* ``build_table`` of the service (rows, sorting, paging, JSON-ready dicts);
* the whole request through FastAPI's test client, which adds routing and JSON encoding.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from unittest import mock

from benchmarks.common import median
from benchmarks.memory import START_S, SteppingClock, fill
from otel_velocity.registry import VelocityRegistry
from otel_velocity.windows import RouteWindow


def time_ms(call: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        timings.append((time.perf_counter() - start) * 1000)
    return median(timings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=1000, help="routes in the registry")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of each layer")
    arguments = parser.parse_args(argv)

    from fastapi.testclient import TestClient
    from otel_velocity_service import ServiceSettings, create_app
    from otel_velocity_service.table import TableQuery, build_table

    clock = SteppingClock(START_S)
    registry = VelocityRegistry(clock=clock, max_routes=max(arguments.routes, 1000))
    fill(registry, clock, arguments.routes, 1)
    settings = ServiceSettings.from_env({})
    client = TestClient(create_app(registry, settings, clock=clock))

    def table(limit: int) -> object:
        return build_table(
            registry,
            TableQuery(limit=limit),
            now_s=clock(),
            sentry_links=None,
            sentry_off_reason="off",
            is_own=lambda service, route: False,
        )

    rows_ms = time_ms(registry.rows, arguments.repeats)
    gc.disable()
    try:
        rows_without_gc_ms = time_ms(registry.rows, arguments.repeats)
    finally:
        gc.enable()
    with mock.patch.object(RouteWindow, "_trend", lambda self, *arguments: []):
        rows_without_trend_ms = time_ms(registry.rows, arguments.repeats)
    print(f"{arguments.routes} routes, medians of {arguments.repeats} runs")
    print(f"  VelocityRegistry.rows()                      {rows_ms:7.1f} ms")
    print(f"  rows() with the garbage collector off        {rows_without_gc_ms:7.1f} ms")
    print(f"  rows() without the 5-minute trend            {rows_without_trend_ms:7.1f} ms")
    for limit in (100, 1000):
        build_ms = time_ms(lambda limit=limit: table(limit), arguments.repeats)
        path = f"/ops/velocity?limit={limit}"
        request_ms = time_ms(
            lambda path=path: client.get(path).raise_for_status(), arguments.repeats
        )
        print(f"  build_table, limit={limit:<5}                   {build_ms:7.1f} ms")
        print(f"  GET {path:<27} (test client) {request_ms:7.1f} ms")


if __name__ == "__main__":
    main()
