"""From a point-in-time training set to a published model version.

Stages, each logged: split by time -> baseline -> torch model (from scratch, or fine-tuning a parent version's
weights with WARM_START: `_weights`) -> evaluation by slice -> selection -> ONNX variants behind the accuracy
gate, with measured latency -> publish, with both candidates' weights as .npz beside the ONNX files.

Selection: the version serves whichever model is better on the validation split (PR-AUC): the torch model
only when it beats the logistic-regression baseline there, otherwise the baseline itself (exported to ONNX as
`LinearBaseline`). The test split then says whether the choice held up (`metrics.baseline_gate`), so a
version is never worse than its own baseline without its metadata and card saying so. Retrieval (Feast) happens
before this, in `_dataset`, so the stages here run the same on any `TrainingSet`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from flywheel_core import model_repo, schema

from . import _export as export
from ._baseline import LinearBaseline, baseline_module, fit_baseline, predict_baseline
from ._config import TrainerSettings
from ._dataset import TrainingSet
from ._errors import ExportError
from ._gates import GateSettings, evaluate_gates
from ._metrics import SLICE_COLUMNS, classification_metrics, slice_metrics
from ._model import FraudNet
from ._publish import (
    DRIFT_REFERENCE_FILE,
    base_metadata,
    discard,
    package_versions,
    publish_version,
    run_pre_publish,
    training_domain,
    write_drift_reference,
)
from ._split import TimeSplit, time_split
from ._stable import find_stable, score_stable
from ._train import predict_probability, train_model
from ._variants import GateThresholds, gate, measure_latency, run_onnx
from ._weights import WEIGHTS_FILES, load_warm_start, save_weights, weights_lineage

log = logging.getLogger("flywheel_trainer")

VARIANT_FILES = {"fp32": "model.fp32.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def training_medians(training_set: TrainingSet, rows: np.ndarray) -> dict[str, float]:
    """Median of each numeric feature over the training split, ignoring missing values (0.0 if all missing)."""
    frame = training_set.frame.iloc[rows]
    medians = {}
    for name in schema.NUMERIC_FEATURES:
        value = frame[name].astype("float64").median(skipna=True)
        medians[name] = 0.0 if np.isnan(value) else float(value)
    return medians


def _evaluate(
    training_set: TrainingSet,
    split: TimeSplit,
    y: np.ndarray,
    p_val: np.ndarray,
    p_test: np.ndarray,
    s: TrainerSettings,
):
    test_frame = training_set.frame.iloc[split.test]
    metrics = {
        "validation": classification_metrics(y[split.validation], p_val, s.ece_bins),
        "test": classification_metrics(y[split.test], p_test, s.ece_bins),
    }
    slices = slice_metrics(
        test_frame,
        y[split.test],
        p_test,
        min_rows=s.min_slice_rows,
        min_positives=s.min_slice_positives,
        bins=s.ece_bins,
    )
    return metrics, slices


MODELS = ("baseline", "torch")
"""The candidates of one run, in the order a tie goes: the simpler model wins it."""


def select(base_metrics: dict[str, Any], torch_metrics: dict[str, Any], serve: str = "auto") -> dict[str, Any]:
    """Which model the version serves: the better on validation PR-AUC (a tie goes to the baseline) unless `serve`
    names one, and whether that choice is at least as good as the baseline on test (`baseline_gate`)."""
    validation = {
        "baseline": base_metrics["validation"]["pr_auc"] or 0.0,
        "torch": torch_metrics["validation"]["pr_auc"] or 0.0,
    }
    test = {"baseline": base_metrics["test"]["pr_auc"] or 0.0, "torch": torch_metrics["test"]["pr_auc"] or 0.0}
    if serve != "auto":
        selected = serve
    else:
        selected = "torch" if validation["torch"] > validation["baseline"] else "baseline"
    held = test[selected] >= test["baseline"]
    return {
        "selected": selected,
        "selection": {
            "split": "validation", "metric": "pr_auc", "values": validation,
            "rule": "the torch model only if its validation PR-AUC is above the baseline's; otherwise the baseline"
            if serve == "auto" else f"set by FLYWHEEL_TRAINER_SERVE={serve}",
        },
        "baseline_gate": {
            "split": "test", "metric": "pr_auc", "values": test, "passed": held,
            "reason": (f"{selected} test PR-AUC {test[selected]:.4f} >= baseline {test['baseline']:.4f}" if held else
                       f"{selected} test PR-AUC {test[selected]:.4f} < baseline {test['baseline']:.4f}: chosen on "
                       "validation, worse than its own baseline on test"),
        },
    }


def build_variants(model, staging: Path, x_cal: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, s: TrainerSettings,
                   reduced_precision: bool = True) -> dict[str, Any]:
    """Export fp32 (parity-checked against the trained module), fp16 and int8 (gated against fp32) unless
    `reduced_precision` is off, and time each."""
    fp32 = export.export_fp32(model, staging / VARIANT_FILES["fp32"], x_test)
    reference = run_onnx(fp32, x_test)
    parity = float(np.max(np.abs(reference - predict_probability(model, x_test))))
    if parity > s.parity_atol:
        raise ExportError(
            f"fp32 ONNX differs from the trained module by {parity:.2e} > {s.parity_atol} on the test split; "
            "the export is wrong"
        )
    log.info(
        "fp32 ONNX parity with the trained module on %d test rows: max abs diff %.2e (tolerance %.0e)",
        len(x_test),
        parity,
        s.parity_atol,
    )
    variants: dict[str, Any] = {
        "fp32": {
            "file": fp32.name,
            "published": True,
            "gate": {
                "split": "test",
                "check": "parity with the trained module",
                "atol": s.parity_atol,
                "probability_diff": parity,
                "passed": True,
                "reason": f"max abs diff {parity:.2e} <= {s.parity_atol}",
            },
        }
    }
    thresholds = GateThresholds(s.gate_max_auc_diff, s.gate_max_probability_diff)
    if reduced_precision:
        variants.update(_reduced_variants(fp32, reference, staging, x_cal, x_test, y_test, thresholds))
    for name, variant in variants.items():
        variant["published"] = bool(variant["gate"]["passed"])
        path = staging / variant["file"]
        latency = measure_latency(
            path, x_test, threads=s.latency_threads, warmup=s.latency_warmup, repeats=s.latency_repeats
        )
        variant["cpu_latency_us"] = latency["batch_1_us"]
        variant["cpu_latency"] = latency
        variant["bytes"] = path.stat().st_size
        log.info(
            "variant %s: %s (%s); CPU latency batch 1 %.1f us, batch 256 %.1f us",
            name, "published" if variant["published"] else "NOT published", variant["gate"]["reason"],
            latency["batch_1_us"], latency["batch_256_us"],
        )
    return variants


def _reduced_variants(fp32: Path, reference: np.ndarray, staging: Path, x_cal: np.ndarray, x_test: np.ndarray,
                      y_test: np.ndarray, thresholds: GateThresholds) -> dict[str, Any]:
    """fp16 and int8, each gated against fp32's probabilities (`reference`) on test."""
    variants: dict[str, Any] = {}
    fp16 = export.convert_fp16(fp32, staging / VARIANT_FILES["fp16"])
    variants["fp16"] = {"file": fp16.name, "gate": gate(reference, run_onnx(fp16, x_test), y_test, thresholds)}

    # Quantise every dense layer first; if that fails the gate keep the input layer in float (its input
    # mixes standardised numerics with long tails and embeddings, which one per-tensor scale serves
    # badly), then the output layer too.
    dense = export.dense_nodes(fp32)
    attempts = []
    for exclude in ([], dense[:1], [dense[0], dense[-1]] if len(dense) > 1 else dense):
        int8 = export.quantize_int8(fp32, staging / VARIANT_FILES["int8"], x_cal, exclude)
        result = gate(reference, run_onnx(int8, x_test), y_test, thresholds)
        attempts.append({"float_nodes": exclude, "passed": result["passed"], "reason": result["reason"]})
        if result["passed"]:
            break
    variants["int8"] = {
        "file": VARIANT_FILES["int8"],
        "gate": {**result, "attempts": attempts},
        "quantization": {
            "method": "onnxruntime quantize_static",
            "format": "QDQ",
            "activations": "int8",
            "weights": "int8",
            "calibration": f"{len(x_cal)} training rows, MinMax",
            "weights_per_channel": True,
            "quantized_ops": ["Gemm", "MatMul"],
            "float_nodes": exclude,
            "embeddings": "float",
        },
    }
    return variants


def judge(training_set: TrainingSet, test_rows: np.ndarray, y_test: np.ndarray, p_test: np.ndarray,
          variants: dict[str, Any], stable: model_repo.ModelVersion | None,
          s: TrainerSettings) -> model_repo.VersionGates:
    """The gates before any traffic: against the stable version (STABLE_VERSION) scored on the same test rows when
    one is asked for, and the variants gate always."""
    settings = GateSettings(
        min_pr_auc_gain=s.gate_min_pr_auc_gain, ci_level=s.gate_ci_level, bootstrap=s.gate_bootstrap,
        max_ece_increase=s.gate_max_ece_increase, max_slice_pr_auc_drop=s.gate_max_slice_pr_auc_drop, seed=s.seed,
        ece_bins=s.ece_bins, min_slice_rows=s.min_slice_rows, min_slice_positives=s.min_slice_positives,
    )
    rows = training_set.frame.iloc[test_rows]
    scores = score_stable(stable, rows) if stable is not None else None
    slices = {column: rows[column].astype("string").fillna("<missing>").to_numpy() for column in SLICE_COLUMNS}
    gates = evaluate_gates(y_test, p_test, variants, settings, slices=slices,
                           p_stable=scores.probabilities if scores else None,
                           stable_version=scores.version if scores else None)
    log.info("gates %s: %s", "passed" if gates.passed else "FAILED (publishing as rejected)",
             "; ".join(f"{c.name} {'ok' if c.passed else 'FAILED'}: {c.reason}" for c in gates.checks))
    return gates


def run_lineage(settings: TrainerSettings, parent: str | None) -> dict[str, Any]:
    """Who asked for this version and why: the link from a RetrainPolicy's run to the version it published.

    `id` is the controller's trainer Job name (RUN_ID); the controller finds the version by it. `parent` is the
    stable version the gates compared with (None: none). `window` is the sliding data window (None: all history).
    `warm_start` is the version whose weights were fine-tuned (stateful retraining; None: trained from scratch).
    """
    return {
        "id": settings.run_id or None,
        "trigger": settings.run_trigger or None,
        "reason": settings.run_reason or None,
        "policy": settings.run_policy or None,
        "parent": parent,
        "window": settings.window or None,
        "warm_start": settings.warm_start or None,
    }


def train_and_publish(
    training_set: TrainingSet, repo: Path, model_name: str, settings: TrainerSettings, *, feature_repo: str = ""
) -> Path:
    """Run every stage on `training_set` and publish the next version of `model_name`; returns its directory."""
    started = time.perf_counter()
    frame, s = training_set.frame, settings
    split = time_split(frame["event_timestamp"], s.validation_fraction, s.test_fraction)
    described = split.describe(frame["event_timestamp"])
    log.info(
        "stage 1/5 split by time: %s",
        ", ".join(f"{k} {v['rows']} rows ({v['start']} .. {v['end']})" for k, v in described.items()),
    )
    stable = find_stable(repo, model_name, settings.stable_version)  # before training: a wrong name fails at once
    warm = load_warm_start(repo, model_name, settings.warm_start, settings)
    defaults = training_medians(training_set, split.train)
    x = schema.vectorize_frame(frame, defaults)
    y = training_set.labels
    x_train, y_train = x[split.train], y[split.train]
    x_val, y_val, x_test, y_test = x[split.validation], y[split.validation], x[split.test], y[split.test]

    stage, cpu = time.perf_counter(), time.process_time()
    baseline = fit_baseline(x_train, y_train, s.seed)
    baseline_compute = {"wall_seconds": round(time.perf_counter() - stage, 2),
                        "cpu_seconds": round(time.process_time() - cpu, 2)}
    base_metrics, base_slices = _evaluate(
        training_set, split, y, predict_baseline(baseline, x_val), predict_baseline(baseline, x_test), s
    )
    log.info("stage 2/5 baseline (logistic regression): test PR-AUC %.4f, ROC-AUC %.4f (%.1fs)",
             base_metrics["test"]["pr_auc"] or 0.0, base_metrics["test"]["roc_auc"] or 0.0, time.perf_counter() - stage)

    stage = time.perf_counter()
    log.info("stage 3/5 torch model: %d training rows, up to %d epochs, %s", len(x_train), s.epochs,
             f"fine-tuning {warm.version}'s weights (warm start)" if warm else "from scratch")
    result = train_model(x_train, y_train, x_val, y_val, s, initial=warm.model if warm else None)
    net = result.model
    torch_metrics, torch_slices = _evaluate(
        training_set, split, y, predict_probability(net, x_val), predict_probability(net, x_test), s
    )
    beats = (torch_metrics["test"]["pr_auc"] or 0.0) > (base_metrics["test"]["pr_auc"] or 0.0)
    choice = select(base_metrics, torch_metrics, s.serve)
    selected = choice["selected"]
    log.info(
        "stage 4/5 selection on validation: torch PR-AUC %.4f vs baseline %.4f -> serving the %s; on test: %s (%.1fs)",
        choice["selection"]["values"]["torch"],
        choice["selection"]["values"]["baseline"],
        selected,
        choice["baseline_gate"]["reason"],
        time.perf_counter() - stage,
    )
    served: FraudNet | LinearBaseline
    linear = baseline_module(baseline)
    if selected == "baseline":
        served = linear
        gap = (
            float(np.max(np.abs(predict_probability(served, x_test) - predict_baseline(baseline, x_test))))
            if len(x_test)
            else 0.0
        )
        if gap > s.parity_atol:
            raise ExportError(
                f"the baseline's graph differs from scikit-learn by {gap:.2e} > {s.parity_atol} on the test split"
            )
    else:
        served = net

    staging = model_repo.staging_path(repo, model_name)
    try:
        stage = time.perf_counter()
        rng = np.random.default_rng(s.seed)
        save_weights(net, staging / WEIGHTS_FILES["torch"])
        save_weights(linear, staging / WEIGHTS_FILES["baseline"])
        x_cal = x_train[np.sort(rng.choice(len(x_train), min(s.int8_calibration_rows, len(x_train)), replace=False))]
        # A linear model is a few hundred multiply-adds: fp16 and int8 would save nothing, only fp32 is built.
        variants = build_variants(served, staging, x_cal, x_test, y_test, s, reduced_precision=selected == "torch")
        for name, variant in variants.items():
            variant["metrics"] = (
                classification_metrics(y_test, run_onnx(staging / VARIANT_FILES[name], x_test), s.ece_bins)
                if variant["published"]
                else None
            )
        log.info("stage 5/5 ONNX variants gated and timed (%.1fs)", time.perf_counter() - stage)
        gates = judge(training_set, split.test, y_test, run_onnx(staging / VARIANT_FILES["fp32"], x_test), variants,
                      stable, s)

        # The drift reference comes from the newest held-out rows (validation + test): their 30-day
        # features are as warmed up as the history allows and their scores are out-of-sample, so live
        # traffic with no shift looks like them. Early training rows, whose rolling windows are still
        # filling, made unchanged traffic look drifted.
        pool = np.concatenate([split.validation, split.test])
        sample = np.sort(rng.choice(pool, min(s.drift_reference_rows, len(pool)), replace=False))
        write_drift_reference(
            staging / DRIFT_REFERENCE_FILE, x[sample], run_onnx(staging / VARIANT_FILES["fp32"], x[sample])
        )
        metadata = {
            **base_metadata(schema.FEATURE_SERVICE, defaults),
            "training_domain": training_domain(frame.iloc[split.train]),
            "gates": gates.model_dump(mode="json"),
            "variants": variants,
            "metrics": {
                "baseline": base_metrics,
                "torch": torch_metrics,
                "primary": "pr_auc",
                "torch_beats_baseline_pr_auc": beats,
                **choice,
                "pr_auc": "average precision (scikit-learn average_precision_score)",
                "ece_bins": s.ece_bins,
                "ece_binning": f"{s.ece_bins} equal-width bins on [0, 1], weighted by rows per bin",
                "calibration": result.calibration,
            },
            "slices": {
                "split": "test",
                "min_rows": s.min_slice_rows,
                "min_positives": s.min_slice_positives,
                "baseline": base_slices,
                "torch": torch_slices,
            },
            "lineage": {
                **training_set.sources,
                "feature_repo": str(feature_repo),
                "cutoff": training_set.cutoff.isoformat().replace("+00:00", "Z"),
                "label_window": str(training_set.window),
                "label_rule": "label_timestamp <= cutoff and event_timestamp <= cutoff - label_window; "
                "entity rows stamped at event_timestamp - 1 µs",
                "rows": training_set.counts,
                "split": {
                    **described,
                    "validation_start": split.validation_start.isoformat().replace("+00:00", "Z"),
                    "test_start": split.test_start.isoformat().replace("+00:00", "Z"),
                    "rule": "train: t < validation_start <= validation < test_start <= test",
                },
                "seed": s.seed,
                "packages": package_versions(),
                "settings": s.model_dump(mode="json"),
                "training": {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                             "pos_weight": result.pos_weight, "history": result.history,
                             "mode": "stateful" if warm else "stateless",
                             "warm_start": warm.lineage(result.history[0]["validation_pr_auc"]) if warm else None,
                             "compute": {"torch": result.compute, "baseline": baseline_compute},
                             "weights": weights_lineage(s, selected)},
                "drift_reference_rows": int(len(sample)),
                "run": run_lineage(s, stable.version if stable else None),
                "wall_seconds_before_publish": round(time.perf_counter() - started, 1),
            },
        }
        run_pre_publish(s.pre_publish_command, staging)
        target = publish_version(staging, repo, model_name, metadata)
    except BaseException:
        discard(staging)
        raise
    log.info("published %s in %.1fs", target, time.perf_counter() - started)
    return target
