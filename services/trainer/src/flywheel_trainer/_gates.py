"""Gates before any traffic: does the candidate beat the stable version on the newest labelled window?

Both versions score the same rows (the test split, the newest labelled window of this run), so the
comparison is paired:

- `pr_auc_gain`: the lower end of a bootstrap confidence interval (percentile, `ci_level`, two-sided) of
  PR-AUC(candidate) - PR-AUC(stable) must be above `min_pr_auc_gain`. The resamples are stratified (frauds
  and legitimate rows resampled apart), so each keeps the window's fraud rate, on which PR-AUC depends, and
  never lacks a fraud to rank. An equal candidate has a lower bound of 0 and fails a bound of 0.
- `ece_increase`: ECE(candidate) - ECE(stable) must be at most `max_ece_increase` (calibrated probabilities
  are thresholded into decisions downstream).
- `slice_pr_auc_drop`: in no slice (country, channel, merchant category, as the trainer measures them; only
  slices with `min_rows` rows, `min_positives` frauds and a legitimate row) may the candidate's PR-AUC be
  more than `max_slice_pr_auc_drop` below the stable's.
- `variants`: every published ONNX variant passed its own gate against fp32 (fp16/int8 that fail are left
  out of the version, not a reason to reject it).

Pure: numpy arrays in, a typed `flywheel_core.model_repo.VersionGates` out, never an exception for a
degenerate window (no rows, no frauds): that is a failed check with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel_core.model_repo import GateCheck, VersionGates

from ._metrics import expected_calibration_error


@dataclass(frozen=True)
class GateSettings:
    """The bounds of the gates (TrainerSettings' GATE_* fields) and how the evidence is gathered."""

    min_pr_auc_gain: float = 0.0
    ci_level: float = 0.9
    bootstrap: int = 500
    max_ece_increase: float = 0.02
    max_slice_pr_auc_drop: float = 0.05
    seed: int = 0
    ece_bins: int = 15
    min_slice_rows: int = 200
    min_slice_positives: int = 5


def average_precision(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """scikit-learn's average_precision_score (step-wise, tied scores one threshold), for one weight vector or
    a batch of them (`weights` [resamples, rows] of resample counts): then one value per resample. NaN when
    the (weighted) rows hold no fraud."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    single = weights is None
    w = np.ones((1, len(y))) if single else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-p, kind="mergesort")
    y_sorted, p_sorted, w_sorted = y[order], p[order], w[:, order]
    # The last row of each run of equal scores is where a threshold falls.
    last = np.r_[np.nonzero(np.diff(p_sorted))[0], len(p_sorted) - 1] if len(p_sorted) else np.empty(0, dtype=np.int64)
    tp = np.cumsum(w_sorted * y_sorted, axis=1)[:, last]
    seen = np.cumsum(w_sorted, axis=1)[:, last]
    total = tp[:, -1:] if len(last) else np.zeros((len(w), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall = tp / total
        gained = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
        ap = np.sum(gained * precision, axis=1)
    ap = np.where(total[:, 0] > 0, ap, np.nan)
    return float(ap[0]) if single else ap


def _stratified_counts(y: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, rows] counts of each row in a bootstrap resample drawn within frauds and legitimate rows apart."""
    counts = np.zeros(resamples * len(y), dtype=np.float64)
    offsets = (np.arange(resamples) * len(y))[:, None]
    for members in (np.flatnonzero(y == 1), np.flatnonzero(y != 1)):
        if len(members) == 0:
            continue
        drawn = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        counts += np.bincount((drawn + offsets).reshape(-1), minlength=len(counts))
    return counts.reshape(resamples, len(y))


def _degenerate(y: np.ndarray) -> str | None:
    positives = int(np.sum(y == 1))
    if len(y) == 0:
        return "the newest labelled window has no rows"
    if positives == 0:
        return f"the newest labelled window ({len(y)} rows) holds no fraud: PR-AUC is undefined"
    if positives == len(y):
        return f"the newest labelled window ({len(y)} rows) holds only frauds: PR-AUC says nothing"
    return None


def pr_auc_gain(y: np.ndarray, p_candidate: np.ndarray, p_stable: np.ndarray, s: GateSettings) -> GateCheck:
    """The paired, stratified bootstrap CI of PR-AUC(candidate) - PR-AUC(stable); passes when its lower end is
    above `s.min_pr_auc_gain`."""
    name, threshold = "pr_auc_gain", s.min_pr_auc_gain
    degenerate = _degenerate(y)
    if degenerate is not None:
        return GateCheck(name=name, passed=False, threshold=threshold, values={"rows": int(len(y))}, reason=degenerate)
    y = (np.asarray(y) == 1).astype(np.float64)
    candidate, stable = average_precision(y, p_candidate), average_precision(y, p_stable)
    rng = np.random.default_rng(s.seed)
    gains = []
    for start in range(0, s.bootstrap, 50):  # 50 resamples at a time bounds the memory of the count matrix
        counts = _stratified_counts(y, min(50, s.bootstrap - start), rng)
        gains.append(average_precision(y, p_candidate, counts) - average_precision(y, p_stable, counts))
    gain = np.concatenate(gains)
    tail = (1.0 - s.ci_level) / 2.0
    low, high = (float(v) for v in np.quantile(gain, [tail, 1.0 - tail]))
    passed = low > threshold
    figures = {
        "candidate": candidate,
        "stable": stable,
        "gain": candidate - stable,
        "ci_low": low,
        "ci_high": high,
        "ci_level": s.ci_level,
        "resamples": s.bootstrap,
        "rows": int(len(y)),
        "positives": int(y.sum()),
    }
    interval = (
        f"PR-AUC gain {candidate - stable:+.4f} ({candidate:.4f} vs {stable:.4f}), "
        f"{s.ci_level:.0%} CI [{low:+.4f}, {high:+.4f}]"
    )
    reason = (
        f"{interval}: lower end above {threshold}"
        if passed
        else f"{interval}: lower end not above {threshold}, the candidate is not shown better than the stable"
    )
    return GateCheck(name=name, passed=passed, value=low, threshold=threshold, values=figures, reason=reason)


def ece_increase(y: np.ndarray, p_candidate: np.ndarray, p_stable: np.ndarray, s: GateSettings) -> GateCheck:
    name, threshold = "ece_increase", s.max_ece_increase
    if len(y) == 0:
        return GateCheck(name=name, passed=False, threshold=threshold, reason="the newest labelled window has no rows")
    candidate = expected_calibration_error(y, p_candidate, s.ece_bins)
    stable = expected_calibration_error(y, p_stable, s.ece_bins)
    increase = candidate - stable
    passed = increase <= threshold
    reason = (
        f"ECE {candidate:.4f} vs stable {stable:.4f}: increase {increase:+.4f} {'<=' if passed else '>'} {threshold}"
    )
    return GateCheck(
        name=name,
        passed=passed,
        value=increase,
        threshold=threshold,
        values={"candidate": candidate, "stable": stable, "bins": s.ece_bins},
        reason=reason,
    )


def slice_pr_auc_drop(
    y: np.ndarray, p_candidate: np.ndarray, p_stable: np.ndarray, slices: Mapping[str, np.ndarray], s: GateSettings
) -> GateCheck:
    """The largest drop of PR-AUC (stable - candidate) over every slice big enough to measure."""
    name, threshold = "slice_pr_auc_drop", s.max_slice_pr_auc_drop
    y = np.asarray(y)
    drops: dict[str, float] = {}
    for column, values in slices.items():
        values = np.asarray(values).astype(str)
        for value in sorted(set(values)):
            mask = values == value
            rows, positives = int(mask.sum()), int(np.sum(y[mask] == 1))
            if rows < s.min_slice_rows or positives < s.min_slice_positives or positives == rows:
                continue
            drops[f"{column}={value}"] = float(
                average_precision(y[mask], p_stable[mask]) - average_precision(y[mask], p_candidate[mask])
            )
    if not drops:
        return GateCheck(
            name=name,
            passed=True,
            threshold=threshold,
            values={"measured": 0},
            reason=f"no slice has {s.min_slice_rows} rows and {s.min_slice_positives} frauds: nothing to compare",
        )
    worst = max(drops, key=lambda k: drops[k])
    passed = drops[worst] <= threshold
    over = sorted(k for k, v in drops.items() if v > threshold)
    reason = (
        f"largest slice drop {drops[worst]:+.4f} ({worst}) <= {threshold} over {len(drops)} slices"
        if passed
        else f"PR-AUC drops more than {threshold} below the stable's in {', '.join(over)} "
        f"(worst {worst}: {drops[worst]:+.4f})"
    )
    return GateCheck(
        name=name,
        passed=passed,
        value=drops[worst],
        threshold=threshold,
        values={"worst": worst, "drops": drops},
        reason=reason,
    )


def variants_check(variants: Mapping[str, Mapping[str, Any]]) -> GateCheck:
    """Every published ONNX variant passed its gate against fp32 (a variant that failed is not published)."""
    published = sorted(n for n, v in variants.items() if v.get("published"))
    left_out = sorted(n for n, v in variants.items() if not v.get("published"))
    unsound = [n for n in published if not (variants[n].get("gate") or {}).get("passed", False)]
    passed = "fp32" in published and not unsound
    if passed:
        reason = f"published {', '.join(published)} within their gates" + (
            f"; left out {', '.join(left_out)}" if left_out else ""
        )
    else:
        reason = f"published variants without a passed gate: {', '.join(unsound) or 'fp32 missing'}"
    return GateCheck(
        name="variants", passed=passed, values={"published": published, "left_out": left_out}, reason=reason
    )


def evaluate_gates(
    y: np.ndarray,
    p_candidate: np.ndarray,
    variants: Mapping[str, Mapping[str, Any]],
    s: GateSettings,
    *,
    p_stable: np.ndarray | None = None,
    stable_version: str | None = None,
    slices: Mapping[str, np.ndarray] | None = None,
) -> VersionGates:
    """The verdict of every gate: against the stable when its probabilities on the same rows are given,
    the variants gate always."""
    checks = []
    if p_stable is not None:
        y = np.asarray(y).reshape(-1)
        p_candidate = np.asarray(p_candidate, dtype=np.float64).reshape(-1)
        p_stable = np.asarray(p_stable, dtype=np.float64).reshape(-1)
        checks += [
            pr_auc_gain(y, p_candidate, p_stable, s),
            ece_increase(y, p_candidate, p_stable, s),
            slice_pr_auc_drop(y, p_candidate, p_stable, slices or {}, s),
        ]
    checks.append(variants_check(variants))
    passed = all(check.passed for check in checks)
    return VersionGates(
        status="candidate" if passed else "rejected",
        passed=passed,
        stable_version=stable_version if p_stable is not None else None,
        checks=checks,
    )
