"""Judge each ONNX variant: accuracy gate against fp32, and measured CPU latency.

A variant is published only if, on the test split, its ROC-AUC is within `gate_max_auc_diff` of the
fp32 graph's and no probability differs from fp32's by more than `gate_max_probability_diff`. Latency
is measured, never assumed: quantising a small MLP can make it slower, and the predictor picks the
fastest published CPU variant from these figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from flywheel_core import schema


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # quantised graphs warn about unused initialisers; not actionable
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, threads: int = 1, batch: int = 8192) -> np.ndarray:
    """Probabilities `[rows]` from the ONNX graph at `path`."""
    sess = session(path, threads)
    out = [
        sess.run(
            [schema.OUTPUT_NAME], {schema.INPUT_NAME: np.ascontiguousarray(x[start : start + batch], dtype=np.float32)}
        )[0]
        for start in range(0, len(x), batch)
    ]
    return np.concatenate(out).reshape(-1) if out else np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class GateThresholds:
    max_auc_diff: float
    max_probability_diff: float


def gate(reference: np.ndarray, candidate: np.ndarray, y: np.ndarray, thresholds: GateThresholds) -> dict[str, Any]:
    """Compare a variant's test probabilities with fp32's; `passed` plus the figures and the reason."""
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1)
    result: dict[str, Any] = {
        "split": "test",
        "rows": int(len(y)),
        "max_auc_diff": thresholds.max_auc_diff,
        "max_probability_diff": thresholds.max_probability_diff,
    }
    if not np.all(np.isfinite(candidate)):
        return {**result, "passed": False, "reason": "the variant produced NaN or infinite probabilities"}
    prob_diff = float(np.max(np.abs(candidate - reference))) if len(y) else 0.0
    both = 0 < int(np.sum(y)) < len(y)
    auc_ref: float | None = None
    auc_var: float | None = None
    auc_diff = 0.0
    if both:
        auc_ref, auc_var = float(roc_auc_score(y, reference)), float(roc_auc_score(y, candidate))
        auc_diff = abs(auc_var - auc_ref)
    reasons = []
    if auc_diff > thresholds.max_auc_diff:
        reasons.append(f"|ROC-AUC difference| {auc_diff:.5f} > {thresholds.max_auc_diff}")
    if prob_diff > thresholds.max_probability_diff:
        reasons.append(f"max abs probability difference {prob_diff:.5f} > {thresholds.max_probability_diff}")
    return {
        **result,
        "roc_auc_fp32": auc_ref,
        "roc_auc": auc_var,
        "auc_diff": auc_diff,
        "probability_diff": prob_diff,
        "passed": not reasons,
        "reason": "; ".join(reasons) if reasons else "within thresholds",
    }


def measure_latency(path: Path, rows: np.ndarray, *, threads: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Median wall time of one `run` call for batch 1 and batch 256, after warm-up."""
    sess = session(path, threads)
    figures: dict[str, Any] = {
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "provider": "CPUExecutionProvider",
    }
    for batch in (1, 256):
        take = np.resize(np.ascontiguousarray(rows, dtype=np.float32), (batch, rows.shape[1]))
        feed = {schema.INPUT_NAME: take}
        for _ in range(warmup):
            sess.run(None, feed)
        timings = np.empty(repeats)
        for i in range(repeats):
            started = time.perf_counter_ns()
            sess.run(None, feed)
            timings[i] = time.perf_counter_ns() - started
        figures[f"batch_{batch}_us"] = round(float(np.median(timings)) / 1000.0, 1)
    return figures
