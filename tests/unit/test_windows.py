import numpy as np
import pytest

from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import RouteKey
from otel_velocity.sketch import RELATIVE_ACCURACY
from otel_velocity.windows import WindowSettings
from tests.support.clock import ManualClock

KEY = RouteKey("GET", "/items/{item_id}")
START_S = 1_000_000.0  # A multiple of the 10 s bucket, so bucket edges are easy to reason about.


def _registry(clock: ManualClock, **settings: float) -> VelocityRegistry:
    return VelocityRegistry(WindowSettings(**settings), clock=clock)  # type: ignore[arg-type]


def _only_row(registry: VelocityRegistry):  # type: ignore[no-untyped-def]
    rows = registry.rows()
    assert len(rows) == 1
    return rows[0].window


def test_window_counts_and_errors_exact() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for i in range(300):
        clock.now_s = START_S + i * 0.1
        status = 200
        if i % 10 == 0:
            status = 503
        elif i % 10 == 1:
            status = 404
        registry.record("shop", KEY, 20.0, status >= 500, status)
    clock.now_s = START_S + 30.0

    window = _only_row(registry)

    assert window.count == 300
    assert window.errors == 30
    assert window.err_rate == pytest.approx(0.1)
    assert window.rps == pytest.approx(300 / 30.0)


def test_window_quantiles_match_numpy() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    rng = np.random.default_rng(11)
    durations = rng.lognormal(mean=3.0, sigma=0.7, size=5_000)
    for i, duration in enumerate(durations):
        clock.now_s = START_S + i * 0.01
        registry.record("shop", KEY, float(duration), False, 200)
    clock.now_s = START_S + 55.0

    window = _only_row(registry)

    exact = np.quantile(durations, [0.5, 0.95, 0.99], method="lower")
    assert window.p50_ms == pytest.approx(exact[0], rel=RELATIVE_ACCURACY)
    assert window.p95_ms == pytest.approx(exact[1], rel=RELATIVE_ACCURACY)
    assert window.p99_ms == pytest.approx(exact[2], rel=RELATIVE_ACCURACY)


def test_short_window_expires_old_buckets() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for _ in range(100):
        registry.record("shop", KEY, 10.0, False, 200)

    clock.now_s = START_S + 55.0
    assert _only_row(registry).count == 100

    clock.now_s = START_S + 60.0
    window = _only_row(registry)
    assert window.count == 0
    assert window.p95_ms is None
    assert window.count_5m == 100


def test_long_window_expires_after_five_minutes() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for _ in range(40):
        registry.record("shop", KEY, 10.0, True, 500)

    clock.now_s = START_S + 299.0
    assert _only_row(registry).count_5m == 40
    assert _only_row(registry).errors_5m == 40

    clock.now_s = START_S + 300.0
    assert _only_row(registry).count_5m == 0


def test_rps_uses_time_since_start() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    clock.now_s = START_S + 5.0
    for _ in range(50):
        registry.record("shop", KEY, 10.0, False, 200)

    assert _only_row(registry).rps == pytest.approx(10.0)


def test_rps_after_long_run() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for second in range(600):
        clock.now_s = START_S + second
        for _ in range(5):
            registry.record("shop", KEY, 10.0, False, 200)
    clock.now_s = START_S + 600.0

    window = _only_row(registry)

    assert window.count == 250
    assert window.rps == pytest.approx(5.0)
    assert window.rps_5m == pytest.approx(5.0)


def _steady_then_slow(
    clock: ManualClock, registry: VelocityRegistry, slow_ms: float, per_s: int
) -> None:
    for second in range(900):
        clock.now_s = START_S + second
        for _ in range(per_s):
            registry.record("shop", KEY, 100.0, False, 200)
    for second in range(900, 960):
        clock.now_s = START_S + second
        for _ in range(per_s):
            registry.record("shop", KEY, slow_ms, False, 200)
    clock.now_s = START_S + 960.0


def test_regression_flag_on() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    _steady_then_slow(clock, registry, slow_ms=150.0, per_s=2)

    window = _only_row(registry)

    assert window.baseline_p95_ms == pytest.approx(100.0, rel=RELATIVE_ACCURACY)
    assert window.regress_pct == pytest.approx(50.0, abs=2.5)
    assert window.is_regress


def test_regression_flag_off_below_threshold() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    _steady_then_slow(clock, registry, slow_ms=110.0, per_s=2)

    window = _only_row(registry)

    assert window.regress_pct == pytest.approx(10.0, abs=2.5)
    assert not window.is_regress


def test_regression_needs_min_samples() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock, min_samples=200)
    _steady_then_slow(clock, registry, slow_ms=300.0, per_s=2)

    window = _only_row(registry)

    assert window.count < 200
    assert window.regress_pct is not None
    assert window.regress_pct > 100.0
    assert not window.is_regress


def test_baseline_covers_fifteen_minutes_before_short_window() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for second in range(0, 2000):
        clock.now_s = START_S + second
        registry.record("shop", KEY, 10.0, False, 200)
    clock.now_s = START_S + 2000.0

    window = _only_row(registry)

    assert window.baseline_count == 900
    assert window.count == 50
    assert window.rps == pytest.approx(1.0)


def test_trend_has_one_point_per_bucket() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for second in range(600):
        clock.now_s = START_S + second
        registry.record("shop", KEY, 10.0 if second < 550 else 50.0, second % 2 == 0, 200)
    clock.now_s = START_S + 600.0

    trend = _only_row(registry).trend

    assert len(trend) == 30
    assert trend[0].time_s == START_S + 310.0
    assert trend[-1].time_s == START_S + 600.0
    assert trend[-2].rps == pytest.approx(1.0)
    assert trend[-2].err_rate == pytest.approx(0.5)
    assert trend[-2].p95_ms == pytest.approx(50.0, rel=RELATIVE_ACCURACY)
    assert trend[0].p95_ms == pytest.approx(10.0, rel=RELATIVE_ACCURACY)


def test_idle_gap_resets_history() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    registry.record("shop", KEY, 10.0, False, 200)
    clock.now_s = START_S + 5000.0
    registry.record("shop", KEY, 30.0, False, 200)

    window = _only_row(registry)

    assert window.count == 1
    assert window.baseline_count == 0
    assert window.p50_ms == pytest.approx(30.0, rel=RELATIVE_ACCURACY)


def test_idle_route_is_dropped() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    registry.record("shop", KEY, 10.0, False, 200)
    clock.now_s = START_S + 10_000.0

    assert registry.rows() == []


def test_exemplars_keep_errors_and_slowest() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for i in range(100):
        clock.now_s = START_S + i * 0.1
        is_error = i in (10, 20)
        registry.record(
            "shop", KEY, float(i), is_error, 503 if is_error else 200, 1000 + i, 2000 + i
        )
    clock.now_s = START_S + 20.0

    exemplars = _only_row(registry).exemplars

    errors = [e for e in exemplars if e.kind == "error"]
    slow = [e for e in exemplars if e.kind == "slow"]
    assert [e.trace_id for e in errors] == [1020, 1010]
    assert [e.status_code for e in errors] == [503, 503]
    assert [e.duration_ms for e in slow] == [99.0, 98.0, 97.0, 96.0, 95.0]
    assert slow[0].trace_id_hex == format(1099, "032x")
    assert slow[0].span_id_hex == format(2099, "016x")


def test_slow_exemplars_age_out() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for i in range(5):
        registry.record("shop", KEY, 900.0 + i, False, 200, i + 1, i + 1)
    clock.now_s = START_S + 400.0
    registry.record("shop", KEY, 5.0, False, 200, 77, 77)

    slow = [e for e in _only_row(registry).exemplars if e.kind == "slow"]

    assert [e.trace_id for e in slow] == [77]


def test_retained_memory_per_route_bounded() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    rng = np.random.default_rng(1)
    for second in range(0, 1000, 2):
        clock.now_s = START_S + second
        for duration in rng.lognormal(3.0, 1.0, 5):
            registry.record("shop", KEY, float(duration), False, 200)

    assert registry.retained_bytes() < 300_000


def test_regression_needs_min_delta() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    _steady_then_slow_ms(clock, registry, base_ms=2.0, slow_ms=4.0)

    window = _only_row(registry)

    assert window.regress_pct is not None
    assert window.regress_pct > 90.0
    assert not window.is_regress


def _steady_then_slow_ms(
    clock: ManualClock, registry: VelocityRegistry, base_ms: float, slow_ms: float
) -> None:
    for second in range(960):
        clock.now_s = START_S + second
        for _ in range(2):
            registry.record("shop", KEY, base_ms if second < 900 else slow_ms, False, 200)
    clock.now_s = START_S + 960.0


def test_rows_without_trend_then_trend() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    for second in range(120):
        clock.now_s = START_S + second
        registry.record("shop", KEY, 10.0, False, 200)

    rows = registry.rows(include_trend=False)
    trend = registry.trend("shop", KEY)

    assert rows[0].window.trend == []
    assert rows[0].window.count == 60
    assert trend == registry.rows()[0].window.trend
    assert registry.trend("shop", RouteKey("GET", "/unknown")) == []


def test_error_exemplar_not_repeated_as_slow() -> None:
    clock = ManualClock(START_S)
    registry = _registry(clock)
    registry.record("shop", KEY, 500.0, True, 503, 7, 8)
    registry.record("shop", KEY, 5.0, False, 200, 9, 10)

    exemplars = _only_row(registry).exemplars

    assert [(e.kind, e.span_id) for e in exemplars] == [("error", 8), ("slow", 10)]
