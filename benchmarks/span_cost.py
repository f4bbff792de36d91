"""Per-span cost of ``VelocitySpanProcessor.on_end`` against a BatchSpanProcessor and no processor.

Each contender runs ``for span in spans: on_end(span)`` over the same pre-built SERVER spans
(benchmarks/spans.py) with ``timeit`` (which turns the garbage collector off while it times).
The contenders take turns within every repeat, so a noisy neighbour slows all of them alike,
and the figure of each is the median over the repeats, in ns per span.

* ``empty loop``: no processor at all, only the loop.
* ``SpanProcessor.on_end``: the SDK's no-op base class, which is the cost of one method call.
* ``BatchSpanProcessor``: the SDK's batch processor with an exporter that discards, ``on_end``
  only. Its worker thread exports in the background as it would in an app. The queue is
  flushed between repeats, so it never fills and drops spans.
* ``VelocitySpanProcessor``: the real registry and clock, Sentry correlation off.
* ``… + Sentry correlation``: the same with the correlation's end hook, as ``install`` wires it
  when a DSN is set (sentry-sdk itself is not started, so the 1 % of 500s cost a no-op
  ``capture_event``).

The worst case is measured apart, one call at a time, with an injected clock: the first span
of a route in a new 10 s bucket seals the previous bucket (its p95, two merges into the sums and
up to four more as old buckets leave the windows). The registry first receives 16 minutes of
traffic, so every window is full.
"""

from __future__ import annotations

import itertools
import time
import timeit
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.common import Section, Table, Target, format_ns, format_ratio, median
from benchmarks.spans import ROUTES, server_spans
from otel_velocity.config import SentrySettings
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import route_key
from otel_velocity.sentry.correlation import SentryCorrelation
from otel_velocity.sketch import LatencySketch
from otel_velocity.windows import RouteWindow, WindowSettings

TARGET_NS = 2000.0
TARGET_BATCH_RATIO = 1.5
SPANS_PER_LOOP = 2000  # Below the BatchSpanProcessor's default queue size of 2,048.

EMPTY = "empty loop (no processor)"
NO_OP = "SpanProcessor.on_end (no-op call)"
BATCH = "BatchSpanProcessor, no-op exporter"
VELOCITY = "VelocitySpanProcessor"
VELOCITY_SENTRY = "VelocitySpanProcessor + Sentry correlation"


class DiscardingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class SteppingClock:
    """A clock for the registry that the benchmark moves by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def measure_steady(repeats: int, spans_per_loop: int = SPANS_PER_LOOP) -> dict[str, list[float]]:
    """Time every contender ``repeats`` times; return ns per span for each repeat."""
    spans = server_spans(spans_per_loop)
    batch = BatchSpanProcessor(DiscardingExporter())
    correlation = SentryCorrelation(SentrySettings(dsn="http://key@127.0.0.1:9/1"))
    hooks: dict[str, Callable[[ReadableSpan], None] | None] = {
        EMPTY: None,
        NO_OP: SpanProcessor().on_end,
        BATCH: batch.on_end,
        VELOCITY: VelocitySpanProcessor(VelocityRegistry()).on_end,
        VELOCITY_SENTRY: VelocitySpanProcessor(
            VelocityRegistry(),
            on_server_span_start=correlation.on_server_span_start,
            on_server_span_end=correlation.on_server_span_end,
        ).on_end,
    }
    timers = {}
    for name, hook in hooks.items():
        statement = "for span in spans: pass" if hook is None else "for span in spans: hook(span)"
        timers[name] = timeit.Timer(statement, globals={"spans": spans, "hook": hook})

    # One untimed pass warms caches and creates every route's window.
    for timer in timers.values():
        timer.timeit(number=1)
    batch.force_flush()

    results: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    try:
        for repeat in range(repeats):
            # Rotate the order so that no contender always runs right after the batch flush.
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                seconds = timers[name].timeit(number=1)
                results[name].append(seconds * 1e9 / len(spans))
                batch.force_flush()
    finally:
        batch.shutdown()
    return results


def measure_worst_case(transitions: int, history_rps: int = 20) -> dict[str, list[float]]:
    """Time single ``on_end`` calls that seal a bucket, and first spans of new routes.

    Returns ns per call for each sample; the timer's own overhead is subtracted.
    """
    start_s = 1_000_000.0
    clock = SteppingClock(start_s)
    registry = VelocityRegistry(clock=clock)
    processor = VelocitySpanProcessor(registry)
    spans = server_spans(len(ROUTES) * history_rps * 10, seed=2)

    # 16 minutes of history at ``history_rps`` per route, so every window and sum is full.
    per_second = len(ROUTES) * history_rps
    for second in range(16 * 60):
        clock.now_s = start_s + second
        for span in spans[(second % 10) * per_second : (second % 10 + 1) * per_second]:
            processor.on_end(span)

    timer_overhead_ns = median(_timer_overhead_ns() for _ in range(200))
    first_in_bucket: list[float] = []
    steady: list[float] = []
    bucket_start_s = (clock.now_s // 10 + 1) * 10
    route_spans = spans[: len(ROUTES)]
    for transition in range(transitions):
        clock.now_s = bucket_start_s + 10 * transition
        # The first span of each route in this bucket seals that route's previous bucket.
        for span in route_spans:
            first_in_bucket.append(_time_call(processor.on_end, span) - timer_overhead_ns)
        for span in spans[: per_second * 10]:
            steady.append(_time_call(processor.on_end, span) - timer_overhead_ns)

    new_route: list[float] = []
    fresh = VelocitySpanProcessor(VelocityRegistry(clock=clock))
    for number, span in zip(range(transitions * 8), itertools.cycle(route_spans)):
        renamed = _with_route(span, f"/new/{number}/{{id}}")
        new_route.append(_time_call(fresh.on_end, renamed) - timer_overhead_ns)

    return {"first_in_bucket": first_in_bucket, "steady": steady, "new_route": new_route}


def measure_layers(repeats: int) -> dict[str, float]:
    """Time each layer under ``on_end`` alone, in ns per call (medians of ``repeats``).

    "Reading the span" is ``on_end`` with a registry whose ``record`` does nothing: the cost of
    attributes, route key, status, duration and ids. The other layers call the registry, one
    route window and one sketch directly with fixed arguments.
    """
    span = server_spans(1)[0]
    registry = VelocityRegistry()
    key = route_key(span.attributes or {})

    class DiscardingRegistry(VelocityRegistry):
        def record(self, *arguments: object) -> None:
            pass

    processor = VelocitySpanProcessor(DiscardingRegistry())
    window = RouteWindow(WindowSettings(), time.time())
    sketch = LatencySketch()
    sketch.add(20.0)
    calls: dict[str, Callable[[], object]] = {
        "on_end, whole": lambda: VelocitySpanProcessor.on_end(full, span),
        "on_end without the registry (reading the span)": lambda: processor.on_end(span),
        "VelocityRegistry.record (clock, lock, lookups, window)": lambda: registry.record(
            "shop", key, 20.0, False, 200, 1, 2
        ),
        "RouteWindow.record (bucket, sketch, exemplar check)": lambda: window.record(
            time.time(), 20.0, False, 200, 1, 2
        ),
        "LatencySketch.add": lambda: sketch.add(20.0),
        "empty lambda (call overhead of this table)": lambda: None,
    }
    full = VelocitySpanProcessor(registry)
    results = {}
    for name, call in calls.items():
        call()
        timings = timeit.Timer(call).repeat(repeat=repeats, number=20_000)
        results[name] = median(timings) / 20_000 * 1e9
    return results


def _timer_overhead_ns() -> float:
    start = time.perf_counter_ns()
    return float(time.perf_counter_ns() - start)


def _time_call(hook: Callable[[ReadableSpan], None], span: ReadableSpan) -> float:
    start = time.perf_counter_ns()
    hook(span)
    return float(time.perf_counter_ns() - start)


def _with_route(span: ReadableSpan, route: str) -> ReadableSpan:
    attributes = dict(span.attributes or {})
    attributes["http.route"] = route
    return ReadableSpan(
        name=span.name,
        context=span.context,
        resource=span.resource,
        attributes=attributes,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
    )


def run(quick: bool) -> Section:
    repeats = 7 if quick else 25
    steady = measure_steady(repeats)
    worst = measure_worst_case(transitions=3 if quick else 12)

    medians = {name: median(values) for name, values in steady.items()}
    empty_ns = medians[EMPTY]
    net = {name: max(value - empty_ns, 0.0) for name, value in medians.items()}
    batch_net = net[BATCH]

    table = Table(
        f"Per-span cost of on_end, median of {repeats} loops of {SPANS_PER_LOOP} spans",
        ["contender", "median ns/span", "range over loops", "net of empty loop", "net / batch"],
    )
    for name, values in steady.items():
        ratio = format_ratio(net[name] / batch_net) if name != EMPTY and batch_net else "-"
        table.add(name, format_ns(medians[name]), _range_ns(values), format_ns(net[name]), ratio)

    worst_table = Table(
        "Single on_end calls with an injected clock, 16 minutes of history, 8 routes",
        ["case", "samples", "median", "p99", "max"],
    )
    for label, key in (
        ("first span of a route in a new 10 s bucket (seals)", "first_in_bucket"),
        ("any other span in the same buckets", "steady"),
        ("first span of a new route (creates its window)", "new_route"),
    ):
        values = sorted(worst[key])
        worst_table.add(
            label,
            len(values),
            format_ns(median(values)),
            format_ns(values[int(0.99 * (len(values) - 1))]),
            format_ns(values[-1]),
        )
    worst_table.notes.append(
        "Single calls are timed with time.perf_counter_ns; its own overhead (median of 200 "
        "empty timings) is subtracted. Garbage collection stays on here."
    )

    layers = measure_layers(repeats=5 if quick else 9)
    layer_table = Table(
        "Where on_end's time goes: each layer timed alone with timeit, median ns per call",
        ["layer", "ns per call"],
    )
    for name, value_ns in layers.items():
        layer_table.add(name, format_ns(value_ns))

    velocity_net = net[VELOCITY]
    targets = [
        Target(
            f"on_end median ≤ {TARGET_NS:.0f} ns per span",
            format_ns(velocity_net),
            velocity_net <= TARGET_NS,
        ),
        Target(
            f"on_end ≤ {TARGET_BATCH_RATIO}x the BatchSpanProcessor's on_end",
            format_ratio(velocity_net / batch_net),
            velocity_net <= TARGET_BATCH_RATIO * batch_net,
        ),
    ]
    return Section(
        "span_cost",
        tables=[table, worst_table, layer_table],
        raw={
            "steady_ns": steady,
            "worst_ns": worst,
            "medians_ns": medians,
            "net_ns": net,
            "layers_ns": layers,
        },
        targets=targets,
    )


def _range_ns(values: Sequence[float]) -> str:
    return f"{format_ns(min(values))} - {format_ns(max(values))}"
