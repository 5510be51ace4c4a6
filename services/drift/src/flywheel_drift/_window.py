"""Windows of live rows and the per-window tests against the reference.

A window closes when it holds `window_rows` rows, or when `window_seconds` of event time have passed
since it opened and it holds at least `min_window_rows` (a quieter window keeps filling). Event time is
the CloudEvent's `ce-time` (or the time it was accepted), so replaying the spool after a restart closes
the same windows.

Each closed window is compared with the hour-matched reference (`Reference.matched`): one test per
tested column (`_stats`), Benjamini-Hochberg across all of them (the probability included: prediction
drift is one more hypothesis of the same family) and PSI for people. Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _stats
from ._reference import PROBABILITY, Reference, ReferenceView


@dataclass
class WindowBuffer:
    """Rows of the open window: the model inputs and the probabilities (NaN where unknown)."""

    opened_at: float | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    rows: int = 0

    def add(self, time: float, x: np.ndarray, probabilities: np.ndarray | None) -> None:
        if self.opened_at is None:
            self.opened_at = time
        self.chunks.append(np.asarray(x, dtype=np.float32))
        p = np.full(len(x), np.nan, dtype=np.float32) if probabilities is None else probabilities
        self.probs.append(np.asarray(p, dtype=np.float32))
        self.rows += len(x)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return the first `n` rows."""
        x = np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0), np.float32)
        p = np.concatenate(self.probs) if self.probs else np.zeros(0, np.float32)
        head_x, head_p = x[:n], p[:n]
        self.chunks = [x[n:]] if len(x) > n else []
        self.probs = [p[n:]] if len(p) > n else []
        self.rows = max(self.rows - n, 0)
        return head_x, head_p


@dataclass(frozen=True)
class WindowPolicy:
    rows: int
    seconds: float
    min_rows: int


def ready_windows(buffer: WindowBuffer, now: float, policy: WindowPolicy) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Close every window that is due; returns (opened_at, x, probabilities) for each."""
    out = []
    while buffer.rows >= policy.rows:
        opened = buffer.opened_at if buffer.opened_at is not None else now
        x, p = buffer.take(policy.rows)
        out.append((opened, x, p))
        buffer.opened_at = now if buffer.rows else None
    if (buffer.opened_at is not None and now - buffer.opened_at >= policy.seconds
            and buffer.rows >= policy.min_rows):
        opened = buffer.opened_at
        x, p = buffer.take(buffer.rows)
        out.append((opened, x, p))
        buffer.opened_at = None
    return out


def evaluate_window(reference: Reference, x: np.ndarray, probabilities: np.ndarray, alpha: float,
                    index: int, opened_at: float, closed_at: float) -> tuple[dict[str, Any], ReferenceView]:
    """Test one window against the (hour-matched) reference; the result is JSON-ready (the report and the
    alert carry it as is), the view is the reference rows it was compared with."""
    view, keep = reference.matched(x, seed=index)
    x, probabilities = x[keep], np.asarray(probabilities)[keep]
    features: dict[str, dict[str, Any]] = {}
    for spec in reference.tested:
        if spec.name == PROBABILITY:
            values = np.asarray(probabilities, dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values) < 2:
                continue
        else:
            values = np.asarray(x[:, spec.index], dtype=np.float64)
        if spec.kind == "categorical":
            cats = reference.category_values[spec.name]
            result = _stats.categorical_test(cats, view.category_counts[spec.name], values)
            current = _stats.category_counts(values, cats)
            psi = _stats.psi(view.psi_ref[spec.name], current / max(current.sum(), 1.0))
            hist = None
        else:
            result = _stats.numeric_test(view.sorted_values[spec.name], values)
            psi = _stats.psi(view.psi_ref[spec.name], _stats.binned_proportions(values, reference.psi_edges[spec.name]))
            hist = _stats.binned_proportions(values, reference.hist_edges[spec.name]).tolist()
        features[spec.name] = {"test": result.test, "p_value": result.p_value, "distance": result.distance,
                               "statistic": result.statistic, "psi": psi, "histogram": hist,
                               "mean": float(np.mean(values)) if len(values) else None}
    names = list(features)
    q_values = _stats.bh_adjusted([features[n]["p_value"] for n in names])
    for name, q in zip(names, q_values, strict=True):
        features[name]["q_value"] = q
        features[name]["drift"] = bool(q <= alpha)
    drifted = sorted((n for n in names if features[n]["drift"]), key=lambda n: features[n]["q_value"])
    summary = {
        "index": index,
        "opened_at": opened_at,
        "closed_at": closed_at,
        "rows": int(len(x)),
        "reference_rows": int(view.rows),
        "hour_matched": reference.hours is not None,
        "alpha": alpha,
        "drift": bool(drifted),
        "drifted_features": [n for n in drifted if n != PROBABILITY],
        "prediction_drift": bool(features.get(PROBABILITY, {}).get("drift", False)),
        "features": features,
    }
    return summary, view
