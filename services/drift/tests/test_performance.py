import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from flywheel_drift._performance import PerformanceLimits, average_precision, calibration_error, evaluate, roc_auc

LIMITS = PerformanceLimits(min_labels=100, min_positives=10, roc_auc_drop=0.05, pr_auc_drop=0.15, ece_rise=0.05)


def test_auc_definitions_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.05
    p = np.round(np.clip(rng.normal(0.1 + 0.3 * y, 0.1), 0, 1), 2)  # rounded: many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_calibration_error_is_zero_when_rates_match_scores():
    y = np.array([0] * 90 + [1] * 10)
    assert calibration_error(y, np.full(100, 0.1), 10) == pytest.approx(0.0)
    assert calibration_error(y, np.full(100, 0.5), 10) == pytest.approx(0.4)


def test_evaluate_waits_for_enough_labels_and_positives():
    assert evaluate(np.zeros(50), np.zeros(50), {}, LIMITS, 1000, 50)["status"] == "insufficient_labels"
    out = evaluate(np.r_[np.zeros(195), np.ones(5)], np.full(200, 0.1), {}, LIMITS, 1000, 200)
    assert out["status"] == "insufficient_positives" and out["coverage"] == 0.2


def test_evaluate_names_what_degraded_against_the_version_test_metrics():
    rng = np.random.default_rng(1)
    y = rng.random(2000) < 0.1
    p = np.clip(rng.normal(0.1, 0.05, 2000), 0, 1)  # scores that ignore the label
    out = evaluate(y, p, {"roc_auc": 0.9, "pr_auc": 0.5, "ece": 0.01}, LIMITS, 2000, 2000)
    assert out["status"] == "degraded"
    assert set(out["degraded"]) == {"roc_auc", "pr_auc"}
