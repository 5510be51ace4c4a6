import numpy as np
import pytest

from flywheel_drift._online import (
    RankCusum,
    _cusum,
    calibrate_threshold,
    siegmund_arl,
    simulate_run_lengths,
    threshold_for,
)


def _ref(seed: int = 0, d: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[np.sort(rng.normal(size=5000)) for _ in range(d)]]


def test_vectorised_cusum_equals_the_recursion():
    rng = np.random.default_rng(0)
    increments = rng.normal(size=(200, 3)) - 0.5
    start = np.array([0.0, 2.0, 5.0])
    expected, s = [], start.copy()
    for row in increments:
        s = np.maximum(0.0, s + row)
        expected.append(s.copy())
    assert np.allclose(_cusum(increments, start), np.array(expected))


def test_threshold_grows_with_ert_and_features():
    assert threshold_for(1000, 2, 0.5) < threshold_for(100_000, 2, 0.5) < threshold_for(100_000, 40, 0.5)
    h = threshold_for(500, 2, 0.5)
    assert siegmund_arl(h, 0.5) == pytest.approx(1000, rel=1e-6)


def test_a_one_sigma_shift_alarms_within_a_few_dozen_rows_naming_the_feature():
    rng = np.random.default_rng(1)
    detector = RankCusum(["a", "b"], _ref(d=2), 0.5, threshold_for(10_000, 4, 0.5))
    assert detector.update(rng.normal(size=(2000, 2))) == []
    rows = rng.normal(size=(100, 2))
    rows[:, 1] += 1.0
    alarms = detector.update(rows)
    assert alarms and alarms[0].feature == "b" and alarms[0].direction == "up"
    assert alarms[0].row <= 2000 + 40


def test_batches_split_differently_give_the_same_alarms():
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(600, 1)) + np.r_[np.zeros(300), np.ones(300)][:, None]
    one = RankCusum(["a"], _ref(), 0.5, 6.0, seed=3)
    many = RankCusum(["a"], _ref(), 0.5, 6.0, seed=3)
    whole = [a.row for a in one.update(rows)]
    assert whole
    assert whole == [a.row for a in many.update(rows)]


def test_ties_do_not_raise_false_alarms_on_a_count_feature():
    rng = np.random.default_rng(4)
    ref = [[np.sort(rng.poisson(0.3, 5000).astype(float))]]
    detector = RankCusum(["count"], ref, 0.5, threshold_for(5000, 2, 0.5))
    alarms = detector.update(rng.poisson(0.3, (20_000, 1)).astype(float))
    assert len(alarms) <= 10  # about 4 expected at an ERT of 5000


def test_simulated_run_length_of_the_siegmund_threshold_is_near_the_ert():
    h = threshold_for(300, 4, 0.5)
    runs = simulate_run_lengths(2000, 2, 0.5, h, streams=400, seed=0, max_rows=6000)
    assert 240 < runs.mean() < 360


def test_calibration_moves_the_threshold_towards_the_target():
    out = calibrate_threshold(200, 1000, 1, 0.5, streams=400, seed=1)
    assert 170 < out["simulated_ert"] < 230
