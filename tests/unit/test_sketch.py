import numpy as np
import pytest
from ddsketch.mapping import LogarithmicMapping

from otel_velocity.sketch import MAX_KEYS, RELATIVE_ACCURACY, LatencySketch, key_for

QUANTILES = (0.5, 0.95, 0.99)


def _relative_errors(sketch: LatencySketch, values: np.ndarray) -> list[float]:
    estimates = sketch.quantiles(QUANTILES)
    exact = np.quantile(values, QUANTILES, method="lower")
    return [abs(e - x) / x for e, x in zip(estimates, exact, strict=True)]


def _sketch_of(values: np.ndarray) -> LatencySketch:
    sketch = LatencySketch()
    for value in values:
        sketch.add(float(value))
    return sketch


@pytest.mark.parametrize(
    "name",
    ["lognormal", "bimodal", "pareto"],
)
def test_sketch_quantiles_within_one_percent(name: str) -> None:
    rng = np.random.default_rng(7)
    if name == "lognormal":
        values = rng.lognormal(mean=3.0, sigma=0.8, size=20_000)
    elif name == "bimodal":
        values = np.concatenate([rng.normal(5, 0.5, 15_000), rng.normal(400, 40, 5_000)])
        values = np.clip(values, 0.1, None)
    else:
        values = (rng.pareto(1.5, 20_000) + 1) * 2.0

    errors = _relative_errors(_sketch_of(values), values)

    for error in errors:
        assert error <= RELATIVE_ACCURACY


def test_key_matches_ddsketch_mapping() -> None:
    mapping = LogarithmicMapping(RELATIVE_ACCURACY)
    for value in (0.001, 0.5, 1.0, 1.0202, 3.7, 250.0, 9_999.9, 1e7):
        assert key_for(value) == mapping.key(value)


def test_merge_equals_single_sketch() -> None:
    rng = np.random.default_rng(3)
    first, second = rng.lognormal(2, 1, 5_000), rng.lognormal(4, 0.5, 5_000)
    merged = _sketch_of(first)
    merged.merge(_sketch_of(second))
    combined = _sketch_of(np.concatenate([first, second]))

    assert merged.count == 10_000
    assert merged.quantiles(QUANTILES) == combined.quantiles(QUANTILES)


def test_subtract_restores_previous_state() -> None:
    rng = np.random.default_rng(5)
    base, extra = rng.lognormal(2, 1, 3_000), rng.lognormal(6, 1, 3_000)
    sketch = _sketch_of(base)
    before = sketch.quantiles(QUANTILES)
    leaving = _sketch_of(extra)

    sketch.merge(leaving)
    sketch.merge(leaving, sign=-1)

    assert sketch.count == 3_000
    assert sketch.quantiles(QUANTILES) == before


def test_empty_sketch_has_no_quantiles() -> None:
    assert LatencySketch().quantiles(QUANTILES) == (None, None, None)


def test_zero_and_invalid_values_count_as_zero() -> None:
    sketch = LatencySketch()
    for value in (0.0, -5.0, float("nan"), float("inf"), 10.0):
        sketch.add(value)
    assert sketch.count == 5
    assert sketch.zero_count == 4
    assert sketch.quantiles((0.0,)) == (0.0,)
    p100 = sketch.quantiles((1.0,))[0]
    assert p100 == pytest.approx(10.0, rel=RELATIVE_ACCURACY)


def test_key_range_is_capped() -> None:
    sketch = LatencySketch()
    for exponent in range(-5, 12):
        sketch.add(10.0**exponent)
    assert sketch.retained_bytes() <= 64 + 8 * MAX_KEYS
    top = sketch.quantiles((1.0,))[0]
    assert top == pytest.approx(1e11, rel=RELATIVE_ACCURACY)
