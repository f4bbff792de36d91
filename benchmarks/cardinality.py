"""Cardinality attack on the in-process windows: distinct route templates, then distinct raw paths.

A client can send any number of distinct URL paths, and an app with a badly templated router can
report any number of distinct ``http.route`` values. This script feeds both through
``VelocitySpanProcessor.on_end`` into a ``VelocityRegistry`` with the default cap of 1,000 routes
per service, and prints the time, the rows, the overflow counts and the memory.

Spans are ``ReadableSpan`` objects built directly, as the SDK hands them to ``on_end``: starting
and ending them through a tracer would cost about ten times the processor's own work and measure
the SDK instead. The clock is fixed, so every request falls in one bucket.

Run from the repository root (about a minute with the defaults)::

    python -m benchmarks.cardinality [--templates 100000] [--raw-paths 1000000]

tests/hardening/test_cardinality.py runs the same attack with smaller counts.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import OVERFLOW_KEY, RouteKey

SERVICE = "shop"
NOW_S = 1_800_000_000.0
START_NS = 1_800_000_000_000_000_000
DURATION_NS = 3_000_000
# Every ERROR_EVERY-th request of each phase responds with 500.
ERROR_EVERY = 10


@dataclass(frozen=True)
class Snapshot:
    """Rows, retained bytes and RSS at one point of the attack."""

    spans: int
    seconds: float
    rows: int
    retained_bytes: int
    rss_bytes: int


@dataclass(frozen=True)
class AttackResult:
    templates: int
    raw_paths: int
    snapshots: list[Snapshot]
    counts: dict[RouteKey, tuple[int, int]]
    overflow_routes: int
    overflow_spans: int

    @property
    def total_seconds(self) -> float:
        return self.snapshots[-1].seconds


def rss_bytes() -> int:
    """Return the resident set size of this process from /proc (Linux), or 0 elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def template_spans(count: int, resource: Resource) -> Iterator[ReadableSpan]:
    """Yield one span per distinct route template, as a router that templates badly reports."""
    for n in range(count):
        yield _span(
            {
                "http.request.method": "GET",
                "http.route": f"/tenant/{n}/items/{{item_id}}",
                "url.path": f"/tenant/{n}/items/7",
                "http.response.status_code": 500 if n % ERROR_EVERY == 0 else 200,
            },
            resource,
            n,
        )


def raw_path_spans(count: int, resource: Resource) -> Iterator[ReadableSpan]:
    """Yield one unrouted span per distinct path, as a scanner probing for files causes."""
    for n in range(count):
        path = f"/probe/{n}/.env"
        yield _span(
            {
                "http.request.method": "GET",
                "url.path": path,
                "http.target": f"{path}?id={n}",
                "http.response.status_code": 500 if n % ERROR_EVERY == 0 else 404,
            },
            resource,
            n,
        )


def _span(attributes: dict[str, object], resource: Resource, n: int) -> ReadableSpan:
    return ReadableSpan(
        name="GET",
        context=SpanContext(trace_id=n + 1, span_id=n + 1, is_remote=False),
        kind=SpanKind.SERVER,
        attributes=attributes,
        resource=resource,
        start_time=START_NS,
        end_time=START_NS + DURATION_NS,
    )


def run_attack(templates: int, raw_paths: int, snapshots_per_phase: int = 2) -> AttackResult:
    """Feed ``templates`` distinct templates, then ``raw_paths`` distinct unrouted paths."""
    registry = VelocityRegistry(clock=lambda: NOW_S)
    processor = VelocitySpanProcessor(registry)
    resource = Resource({"service.name": SERVICE})

    gc.collect()
    snapshots = [Snapshot(0, 0.0, 0, registry.retained_bytes(), rss_bytes())]
    started_s = time.perf_counter()
    fed = 0
    for spans, count in (
        (template_spans(templates, resource), templates),
        (raw_path_spans(raw_paths, resource), raw_paths),
    ):
        step = max(count // snapshots_per_phase, 1)
        for index, span in enumerate(spans, start=1):
            processor.on_end(span)
            if index % step == 0 or index == count:
                elapsed_s = time.perf_counter() - started_s
                gc.collect()
                snapshots.append(
                    Snapshot(
                        fed + index,
                        elapsed_s,
                        len(registry.rows()),
                        registry.retained_bytes(),
                        rss_bytes(),
                    )
                )
        fed += count

    overflow = registry.overflow()
    return AttackResult(
        templates=templates,
        raw_paths=raw_paths,
        snapshots=snapshots,
        counts={row.key: (row.window.count, row.window.errors) for row in registry.rows()},
        overflow_routes=overflow.routes,
        overflow_spans=overflow.spans,
    )


def report(result: AttackResult) -> str:
    """Return the figures of one attack as a Markdown table and a summary."""
    lines = [
        "| spans fed | seconds | rows | retained_bytes | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for snapshot in result.snapshots:
        lines.append(
            f"| {snapshot.spans:,} | {snapshot.seconds:.1f} | {snapshot.rows:,} "
            f"| {snapshot.retained_bytes:,} | {snapshot.rss_bytes / 2**20:.1f} |"
        )
    spans = result.templates + result.raw_paths
    overflow_count = result.counts.get(OVERFLOW_KEY, (0, 0))[0]
    lines += [
        "",
        f"{spans:,} spans in {result.total_seconds:.1f} s "
        f"({result.total_seconds / spans * 1e6:.2f} µs per span, snapshots included); "
        f"overflow row count {overflow_count:,}, overflow().spans {result.overflow_spans:,}, "
        f"overflow().routes {result.overflow_routes:,} (tracked up to 10,000).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cardinality",
        description="Feed distinct route templates and raw paths through the span processor.",
    )
    parser.add_argument(
        "--templates", type=int, default=100_000, help="distinct http.route values (100000)"
    )
    parser.add_argument(
        "--raw-paths", type=int, default=1_000_000, help="distinct unrouted url.path (1000000)"
    )
    arguments = parser.parse_args(argv)

    result = run_attack(arguments.templates, arguments.raw_paths, snapshots_per_phase=4)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
