"""The statistical half of the drift benchmark: the service's detectors and plain alibi-detect ones on
the same synthetic data (independent N(0, 1) features, one fixed reference per setting).

- false alarms: share of no-drift windows in which a detector says "drift" (goal <= alpha + 0.01);
- power: share of windows with a 0.2-sigma shift in 1 of 20 features flagged (goal >= 0.80);
- online: run length without drift (goal within 10 % of the ERT) and delay after a 1-sigma shift.

The service's per-window test is its own code path (`_window.evaluate_window` on a `Reference` built by
`build_reference`), not a re-implementation.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from flywheel_core.model_repo import ModelMetadata
from flywheel_drift._online import RankCusum, calibrate_threshold, threshold_for
from flywheel_drift._reference import build_reference
from flywheel_drift._window import evaluate_window

ALPHA = 0.05


def reference(m: int, d: int, seed: int) -> tuple[np.ndarray, Any]:
    x_ref = np.random.default_rng(seed).standard_normal((m, d)).astype(np.float32)
    names = [f"f{i:02d}" for i in range(d)]
    columns = {n: x_ref[:, i] for i, n in enumerate(names)}
    return x_ref, build_reference("bench", "v1", _numeric_metadata(names), columns, ())


def _numeric_metadata(names: list[str]) -> ModelMetadata:
    """The typed metadata of a model whose inputs are `names`, all numeric (what build_reference reads)."""
    return ModelMetadata.model_validate({
        "model": "bench", "version": "v1",
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, len(names)],
                  "columns": [{"name": n, "kind": "numeric"} for n in names]},
        "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]}})


def _window_trials(args: tuple[int, int, int, float, int, int]) -> dict[str, int]:
    """`trials` windows of n rows, each against a freshly drawn reference of m rows (so the rates are
    not conditional on one lucky or unlucky reference); counts how often each detector flags drift."""
    from alibi_detect.cd import CVMDrift, KSDrift

    m, n, d, shift, trials, seed = args
    counts = {"alibi_ks_bonferroni": 0, "alibi_ks_fdr": 0, "alibi_cvm_bonferroni": 0, "service": 0}
    rng = np.random.default_rng(seed + 1)
    nan = np.full(n, np.nan, dtype=np.float32)
    for i in range(trials):
        x_ref, ref = reference(m, d, int(rng.integers(2**31)))
        detectors = {
            "alibi_ks_bonferroni": KSDrift(x_ref, p_val=ALPHA, correction="bonferroni"),
            "alibi_ks_fdr": KSDrift(x_ref, p_val=ALPHA, correction="fdr"),
            "alibi_cvm_bonferroni": CVMDrift(x_ref, p_val=ALPHA, correction="bonferroni"),
        }
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[:, 0] += shift
        counts["service"] += evaluate_window(ref, x, nan, ALPHA, i, 0.0, 0.0)[0]["drift"]
        for name, detector in detectors.items():
            counts[name] += int(detector.predict(x)["data"]["is_drift"])
    return counts


def window_rates(m: int, n: int, d: int, shift: float, trials: int, workers: int) -> dict[str, Any]:
    chunks = [(m, n, d, shift, trials // workers + (i < trials % workers), 100 + i) for i in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_window_trials, chunks))
    totals = {k: sum(p[k] for p in parts) for k in parts[0]}
    rates = {k: v / trials for k, v in totals.items()}
    return {"reference_rows": m, "window_rows": n, "features": d, "shift_sigma": shift, "trials": trials,
            "rate": rates, "ci95_halfwidth": {k: 1.96 * (r * (1 - r) / trials) ** 0.5 for k, r in rates.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def _poisson_trials(args: tuple[int, int]) -> dict[str, int]:
    """No drift on count features (many ties): how rank formulas fare."""
    from alibi_detect.cd import CVMDrift, KSDrift

    trials, seed = args
    rng = np.random.default_rng(seed)
    d = 10
    x_ref = rng.poisson(1.0, (5000, d)).astype(np.float32)
    names = [f"c{i}" for i in range(d)]
    ref = build_reference("bench", "v1", _numeric_metadata(names), {k: x_ref[:, i] for i, k in enumerate(names)}, ())
    ks, cvm = KSDrift(x_ref, p_val=ALPHA), CVMDrift(x_ref, p_val=ALPHA)
    counts = {"service": 0, "alibi_ks_bonferroni": 0, "alibi_cvm_bonferroni": 0}
    nan = np.full(500, np.nan, dtype=np.float32)
    for i in range(trials):
        x = rng.poisson(1.0, (500, d)).astype(np.float32)
        counts["service"] += evaluate_window(ref, x, nan, ALPHA, i, 0.0, 0.0)[0]["drift"]
        counts["alibi_ks_bonferroni"] += int(ks.predict(x)["data"]["is_drift"])
        counts["alibi_cvm_bonferroni"] += int(cvm.predict(x)["data"]["is_drift"])
    return counts


def discrete_false_alarms(trials: int, workers: int) -> dict[str, Any]:
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_poisson_trials, [(trials // workers, 300 + i) for i in range(workers)]))
    total = sum(trials // workers for _ in range(workers))
    return {"features": "10 x Poisson(1) counts, reference 5000, window 500", "trials": total,
            "rate": {k: sum(p[k] for p in parts) / total for k in parts[0]}}


def rank_cusum_runs(ert: float, d: int, h: float, runs: int, shift: float, change_at: int, seed: int,
                    n_ref: int = 5000) -> dict[str, Any]:
    """Run lengths (shift 0) or delays after `change_at` (runs with an earlier false alarm are dropped)."""
    rng = np.random.default_rng(seed)
    lengths = []
    false_before = 0
    horizon = int(20 * ert) if shift == 0 else change_at + 2000
    for r in range(runs):
        # A fresh reference per run: a fixed reference's sampling error moves the run length by +-15 %,
        # for this detector and for CVMDriftOnline alike; the ERT is a promise over references.
        refs = [[np.sort(rng.standard_normal(n_ref)) for _ in range(d)]]
        detector = RankCusum([f"f{i}" for i in range(d)], refs, 0.5, h, seed=seed + r)
        t = 0
        while t < horizon:
            chunk = rng.standard_normal((256, d))
            if shift:
                chunk[max(change_at - t, 0):, 0] += shift
            alarms = detector.update(chunk)
            if alarms:
                t = alarms[0].row  # rows since the detector started, the alarming one included
                break
            t += len(chunk)
        else:
            t = horizon
        if shift and t <= change_at:
            false_before += 1
            continue
        lengths.append(t - change_at if shift else t)
    lengths_a = np.asarray(lengths, dtype=float)
    return {"runs": len(lengths), "mean": float(lengths_a.mean()), "median": float(np.median(lengths_a)),
            "se": float(lengths_a.std(ddof=1) / np.sqrt(len(lengths_a))), "false_alarms_before_change": false_before}


def _alibi_online(args: tuple[float, list[int], int, int, float, int, int]) -> dict[str, Any]:
    from alibi_detect.cd import CVMDriftOnline

    ert, windows, n_bootstraps, runs, shift, change_at, seed = args
    rng = np.random.default_rng(seed)
    x_ref = rng.standard_normal((1000, 1)).astype(np.float32)
    started = time.perf_counter()
    detector = CVMDriftOnline(x_ref, ert=ert, window_sizes=windows, n_bootstraps=n_bootstraps, verbose=False)
    configure_s = time.perf_counter() - started
    lengths, false_before, cap = [], 0, int(10 * ert)
    started = time.perf_counter()
    events = 0
    for _ in range(runs):
        # A fresh reference per run, as for the service's detector. The thresholds do not depend on the
        # reference's values (rank statistics), so only the reference arrays are rebuilt.
        detector.x_ref = rng.standard_normal((1000, 1)).astype(np.float32)
        detector._configure_ref()
        detector.reset_state()
        t = 0
        while t < cap:
            t += 1
            x = rng.standard_normal(1).astype(np.float32)
            if shift and t > change_at:
                x += shift
            events += 1
            if detector.predict(x, return_test_stat=False)["data"]["is_drift"]:
                break
        if shift and t <= change_at:
            false_before += 1
            continue
        lengths.append(t - change_at if shift else t)
    return {"lengths": lengths, "false_before": false_before, "configure_s": configure_s,
            "per_event_ms": 1000 * (time.perf_counter() - started) / max(events, 1)}


def alibi_online(ert: float, windows: list[int], n_bootstraps: int, runs: int, shift: float, change_at: int,
                 workers: int) -> dict[str, Any]:
    chunks = [(ert, windows, n_bootstraps, runs // workers, shift, change_at, 500 + i) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_alibi_online, chunks))
    lengths = np.asarray([v for p in parts for v in p["lengths"]], dtype=float)
    return {"runs": len(lengths), "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "se": float(lengths.std(ddof=1) / np.sqrt(len(lengths))),
            "false_alarms_before_change": sum(p["false_before"] for p in parts),
            "configure_thresholds_s": round(float(np.mean([p["configure_s"] for p in parts])), 1),
            "per_event_ms": round(float(np.mean([p["per_event_ms"] for p in parts])), 3)}


def online_thresholds(ert: float, d: int) -> dict[str, Any]:
    started = time.perf_counter()
    siegmund = threshold_for(ert, 2 * d, 0.5)
    siegmund_s = time.perf_counter() - started
    started = time.perf_counter()
    calibrated = calibrate_threshold(ert, 5000, d, 0.5, streams=2000, seed=11)
    return {"siegmund_h": siegmund, "siegmund_seconds": siegmund_s, "simulated_h": calibrated["h"],
            "simulated_ert_at_h": calibrated["simulated_ert"], "simulation_seconds": time.perf_counter() - started}
