"""The gates before any traffic (`_gates`): pure functions of labels and two models' probabilities on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from flywheel_trainer._gates import GateSettings, average_precision, evaluate_gates

FP32_ONLY = {"fp32": {"published": True, "gate": {"passed": True}}}
FAST = GateSettings(bootstrap=200, seed=7, min_slice_rows=50, min_slice_positives=5)


def window(rows: int = 4000, fraud_rate: float = 0.05, seed: int = 1):
    """Labels, a country slice, and a decent model's probabilities."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < fraud_rate).astype(np.int64)
    p = np.clip(0.05 + 0.35 * y + rng.normal(0, 0.12, rows), 0.001, 0.999)
    country = np.where(rng.random(rows) < 0.5, "DE", "US")
    return y, p, {"country": country}, rng


def verdict(y, candidate, stable, slices=None, s=FAST, variants=FP32_ONLY):
    gates = evaluate_gates(y, candidate, variants, s, p_stable=stable, stable_version="v1", slices=slices)
    return gates, {check.name: check for check in gates.checks}


def test_a_clearly_better_candidate_passes_every_gate():
    y, stable, slices, rng = window()
    candidate = np.clip(0.03 + 0.6 * y + rng.normal(0, 0.08, len(y)), 0.001, 0.999)
    # Calibration within the margin: the better model is not allowed to be less calibrated for it here.
    candidate = np.where(y == 1, candidate, stable * 0.98)
    gates, checks = verdict(y, candidate, stable, slices)
    assert checks["pr_auc_gain"].passed and checks["pr_auc_gain"].value > 0, checks["pr_auc_gain"].reason
    assert gates.passed and gates.status == "candidate" and gates.stable_version == "v1", gates.summary()


def test_an_equal_candidate_fails_a_gain_bound_of_zero_and_above():
    y, stable, slices, _ = window()
    for bound in (0.0, 0.01):
        gates, checks = verdict(y, stable.copy(), stable, slices, GateSettings(min_pr_auc_gain=bound, bootstrap=100))
        assert not checks["pr_auc_gain"].passed and checks["pr_auc_gain"].value == 0.0
        assert checks["ece_increase"].passed and checks["slice_pr_auc_drop"].passed
        assert gates.status == "rejected" and gates.summary().startswith("pr_auc_gain: PR-AUC gain +0.0000")


def test_a_worse_calibrated_candidate_fails_the_ece_gate_even_when_it_ranks_as_well():
    y, stable, slices, _ = window()
    candidate = np.sqrt(stable)  # same order (same PR-AUC), probabilities pushed up
    gates, checks = verdict(y, candidate, stable, slices, GateSettings(min_pr_auc_gain=-1.0, bootstrap=50))
    assert checks["pr_auc_gain"].passed and not checks["ece_increase"].passed
    assert checks["ece_increase"].value > 0.02 and "increase" in checks["ece_increase"].reason
    assert [c.name for c in gates.failed()] == ["ece_increase"]


def test_a_slice_collapse_fails_the_slice_gate_and_names_the_slice():
    y, stable, slices, rng = window()
    candidate = stable.copy()
    us = slices["country"] == "US"
    candidate[us] = rng.random(int(us.sum()))  # ranks US no better than chance
    _, checks = verdict(
        y,
        candidate,
        stable,
        slices,
        GateSettings(min_pr_auc_gain=-1.0, max_ece_increase=1.0, bootstrap=50, min_slice_rows=50),
    )
    assert not checks["slice_pr_auc_drop"].passed
    assert (
        checks["slice_pr_auc_drop"].values["worst"] == "country=US"
        and "country=US" in checks["slice_pr_auc_drop"].reason
    )


def test_slices_too_small_to_measure_are_not_compared():
    y, stable, slices, rng = window(rows=400)
    _, checks = verdict(y, rng.random(len(y)), stable, slices, GateSettings(min_slice_rows=10_000, bootstrap=50))
    assert checks["slice_pr_auc_drop"].passed and checks["slice_pr_auc_drop"].values == {"measured": 0}


@pytest.mark.parametrize(
    ("y", "why"),
    [
        (np.zeros(300, dtype=np.int64), "holds no fraud"),
        (np.ones(300, dtype=np.int64), "holds only frauds"),
        (np.zeros(0, dtype=np.int64), "has no rows"),
    ],
)
def test_a_degenerate_window_is_a_failed_gate_with_its_reason_never_an_exception(y, why):
    p = np.full(len(y), 0.1)
    gates, checks = verdict(y, p, p, {"country": np.array(["DE"] * len(y))})
    assert gates.status == "rejected" and not checks["pr_auc_gain"].passed and why in checks["pr_auc_gain"].reason
    assert checks["pr_auc_gain"].value is None


def test_without_a_stable_only_the_variants_gate_runs():
    y, p, _, _ = window(rows=200)
    gates = evaluate_gates(y, p, {**FP32_ONLY, "int8": {"published": False, "gate": {"passed": False}}}, FAST)
    assert gates.passed and gates.stable_version is None and [c.name for c in gates.checks] == ["variants"]
    assert gates.checks[0].values == {"published": ["fp32"], "left_out": ["int8"]}


def test_a_published_variant_without_a_passed_gate_rejects_the_version():
    y, p, _, _ = window(rows=200)
    gates = evaluate_gates(y, p, {**FP32_ONLY, "fp16": {"published": True, "gate": {"passed": False}}}, FAST)
    assert gates.status == "rejected" and "fp16" in gates.summary()


def test_the_bootstrap_is_seeded():
    y, stable, slices, rng = window()
    candidate = np.clip(stable + rng.normal(0, 0.05, len(y)), 0.001, 0.999)
    first = verdict(y, candidate, stable, slices)[1]["pr_auc_gain"].values
    assert verdict(y, candidate, stable, slices)[1]["pr_auc_gain"].values == first
    other = verdict(y, candidate, stable, slices, GateSettings(bootstrap=200, seed=8))[1]["pr_auc_gain"].values
    assert other["ci_low"] != first["ci_low"] and other["candidate"] == first["candidate"]


@pytest.mark.parametrize("seed", range(40))
def test_average_precision_is_scikit_learns_with_ties_and_weights(seed):
    """A property over random small cases (no hypothesis in this project): few distinct scores, so many ties."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 60))
    y, p, w = rng.integers(0, 2, rows), rng.integers(0, 21, rows) / 20, rng.integers(0, 4, rows).astype(float)
    if (y * w).sum() == 0:
        assert np.isnan(average_precision(y, p, w[None, :])[0])
    else:
        expected = average_precision_score(y, p, sample_weight=w)
        assert average_precision(y, p, w[None, :])[0] == pytest.approx(expected, abs=1e-12)
    if y.sum():
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
