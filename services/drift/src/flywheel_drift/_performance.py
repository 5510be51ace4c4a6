"""Delayed-label performance: ROC-AUC, PR-AUC, calibration error, and when they count as degraded.

Definitions match the trainer's (scikit-learn's roc_auc_score and average_precision_score, ECE over
equal-width bins weighted by rows), so a live figure is comparable with the version's test figure in
metadata.json. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """PR-AUC as average precision: sum over thresholds of (recall step) x precision, ties grouped."""
    y = np.asarray(y).astype(np.float64)
    n_pos = y.sum()
    if n_pos == 0 or n_pos == len(y):
        return None
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
    scores, labels = np.asarray(p, dtype=np.float64)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float | None:
    """Expected calibration error: sum over equal-width bins of |mean p - fraud rate| x share of rows."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return None
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins))
    return float(gap.sum() / len(y)) if count.sum() else None


@dataclass(frozen=True)
class PerformanceLimits:
    """When live performance counts as degraded, relative to the version's test metrics."""

    min_labels: int
    min_positives: int
    roc_auc_drop: float
    pr_auc_drop: float
    ece_rise: float
    ece_bins: int = 15


def evaluate(y: np.ndarray, p: np.ndarray, baseline: dict[str, Any], limits: PerformanceLimits,
             predictions: int, labelled: int) -> dict[str, Any]:
    """Rolling metrics on the most recent labelled rows and the reasons they count as degraded.

    `predictions`/`labelled` are the version's totals, for label coverage.
    """
    y = np.asarray(y)
    positives = int(y.sum())
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "positives": positives,
        "coverage": (labelled / predictions) if predictions else None,
        "roc_auc": None,
        "pr_auc": None,
        "ece": None,
        "baseline": {key: baseline.get(key) for key in ("roc_auc", "pr_auc", "ece")},
        "degraded": [],
        "status": "insufficient_labels",
    }
    if len(y) < limits.min_labels:
        return out
    out["ece"] = calibration_error(y, p, limits.ece_bins)
    out["status"] = "ok"
    if positives >= limits.min_positives and positives < len(y):
        out["roc_auc"] = roc_auc(y, p)
        out["pr_auc"] = average_precision(y, p)
    else:
        out["status"] = "insufficient_positives"
    checks = (
        ("roc_auc", lambda live, base: live < base - limits.roc_auc_drop),
        ("pr_auc", lambda live, base: live < base - limits.pr_auc_drop),
        ("ece", lambda live, base: live > base + limits.ece_rise),
    )
    for name, worse in checks:
        live, base = out[name], baseline.get(name)
        if live is not None and base is not None and worse(live, float(base)):
            out["degraded"].append(name)
    if out["degraded"]:
        out["status"] = "degraded"
    return out
