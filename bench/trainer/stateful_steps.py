"""The steps of bench/trainer/stateful.py that need numpy, Feast and the trainer: run with the trainer's venv.

    services/trainer/.venv/bin/python bench/trainer/stateful_steps.py deliver DATA LIVE.jsonl UNTIL
    services/trainer/.venv/bin/python bench/trainer/stateful_steps.py evaluate DATA REPO CUTOFF START END V...

`deliver` does what the running stack does as simulated time reaches UNTIL: the stream step's card and merchant
rows for the live transactions up to then (computed here by the batch pipeline over history + live, the same
windows and rules as flywheel_core.card_stream), and the label feed's part: every live transaction whose label is
due by then, appended as `transactions.live-<n>.parquet` (flywheel_core.label_feed.due / write_part).

`evaluate` scores each version on one held-out window: the labelled transactions with event time in (START, END],
their point-in-time features through Feast as training joins them, each version's served fp32 ONNX graph with its
own defaults, and both of its candidates rebuilt from its weights .npz. Prints JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from flywheel_core import feature_pipeline, label_feed, model_repo, schema
from flywheel_core.feature_pipeline import read_parquet

ROOT = Path(__file__).resolve().parents[2]
FEATURE_REPO = ROOT / "feature_repo"


def deliver(data: Path, live_file: Path, until: str) -> dict:
    until_ts = pd.Timestamp(until)
    truth = label_feed.read_truth([live_file])
    live = truth[truth["event_timestamp"] <= until_ts]
    history = read_parquet(data / feature_pipeline.TRANSACTIONS_FILE)
    history["event_timestamp"] = pd.to_datetime(history["event_timestamp"], utc=True)
    history["label_timestamp"] = pd.to_datetime(history["label_timestamp"], utc=True)
    feature_pipeline.write_feature_tables(pd.concat([history, live], ignore_index=True), data)
    scored = dict(zip(live["transaction_id"].astype(str), feature_pipeline.to_us(live["event_timestamp"]).tolist(),
                      strict=True))
    rows = label_feed.due(truth, scored, label_feed.delivered(data))
    part = label_feed.write_part(data, rows) if len(rows) else None
    return {"until": until, "live_scored": len(live), "labels_delivered": len(rows),
            "frauds_delivered": int(rows["is_fraud"].sum()), "part": part.name if part else None}


def _scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"pr_auc": round(float(average_precision_score(y, p)), 4), "roc_auc": round(float(roc_auc_score(y, p)), 4)}


def _bootstrap_pr_auc(y: np.ndarray, p: np.ndarray, n: int = 500, seed: int = 20261123) -> list[float]:
    """90 % percentile interval of PR-AUC, frauds and legitimate rows resampled apart."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = []
    for _ in range(n):
        rows = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(average_precision_score(y[rows], p[rows]))
    return [round(float(v), 4) for v in np.percentile(values, [5, 95])]


def evaluate(data: Path, repo: Path, cutoff: str, start: str, end: str, versions: list[str]) -> dict:
    import os

    os.environ.setdefault("FLYWHEEL_DATA_DIR", str(data))
    from flywheel_trainer import build_training_set
    from flywheel_trainer._train import predict_probability
    from flywheel_trainer._variants import run_onnx
    from flywheel_trainer._weights import read_weights, rebuild

    training_set = build_training_set(FEATURE_REPO, data, pd.Timestamp(cutoff),
                                      data_window=pd.Timestamp(cutoff) - pd.Timestamp(start))
    frame = training_set.frame
    frame = frame[(frame["event_timestamp"] > pd.Timestamp(start)) & (frame["event_timestamp"] <= pd.Timestamp(end))]
    y = frame["is_fraud"].to_numpy().astype("int64")
    out: dict = {"window": {"start": start, "end": end, "label_cutoff": cutoff, "rows": len(frame),
                            "frauds": int(y.sum())}, "versions": {}}
    for name in versions:
        version = model_repo.load_version(repo / "fraud" / name)
        x = schema.vectorize_frame(frame, version.spec.defaults)
        served = run_onnx(version.file(version.spec.variants["fp32"].file), x)
        result = {"served": version.metadata["metrics"]["selected"], **_scores(y, served),
                  "pr_auc_ci90": _bootstrap_pr_auc(y, np.asarray(served, dtype=np.float64))}
        weights = version.metadata["lineage"]["training"]["weights"]
        for candidate in ("torch", "baseline"):
            module = rebuild(read_weights(version.file(weights[candidate]["file"])), weights[candidate]["architecture"])
            result[candidate] = _scores(y, predict_probability(module, x))
        out["versions"][name] = result
    return out


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "deliver":
        result = deliver(Path(args[0]), Path(args[1]), args[2])
    elif command == "evaluate":
        result = evaluate(Path(args[0]), Path(args[1]), args[2], args[3], args[4], args[5:])
    else:
        raise SystemExit(f"unknown step {command!r}: deliver or evaluate")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
