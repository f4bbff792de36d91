"""Guard against a gross regression of ``VelocitySpanProcessor.on_end``, far above the noise.

It runs the benchmark of benchmarks/span_cost.py briefly: 9 interleaved loops of 2,000
pre-built SERVER spans per contender, medians. It fails only above 10 times the 2 µs target,
or above 10 times the BatchSpanProcessor's on_end measured in the same run. The figures in
docs/benchmarks.md sit several times below both limits.
"""

from benchmarks.common import median
from benchmarks.span_cost import BATCH, EMPTY, VELOCITY, measure_steady

MAX_NS_PER_SPAN = 10 * 2000.0
MAX_BATCH_RATIO = 10.0


def test_on_end_cost_not_grossly_regressed() -> None:
    results = measure_steady(repeats=9)
    empty_ns = median(results[EMPTY])
    velocity_ns = median(results[VELOCITY]) - empty_ns
    batch_ns = median(results[BATCH]) - empty_ns

    assert velocity_ns < MAX_NS_PER_SPAN, (
        f"on_end costs {velocity_ns:.0f} ns per span (median of 9 loops), over the guard of "
        f"{MAX_NS_PER_SPAN:.0f} ns; profile it with `python -m benchmarks --only span_cost`"
    )
    assert velocity_ns < MAX_BATCH_RATIO * batch_ns, (
        f"on_end costs {velocity_ns:.0f} ns per span, {velocity_ns / batch_ns:.1f} times the "
        f"BatchSpanProcessor's {batch_ns:.0f} ns, over the guard of {MAX_BATCH_RATIO:.0f} times"
    )
