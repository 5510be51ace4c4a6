"""Model inputs for the simulator's scenarios, computed the way training and serving compute them.

History and live transactions come from `flywheel_core.sim`; card and merchant features from
`flywheel_core.feature_pipeline` over history + live, joined point-in-time (each transaction sees the
card state 1 ms before itself, `schema.as_of`, and the last daily merchant snapshot); on-demand features
from `flywheel_core.ondemand`; the model input from `schema.vectorize_frame`. The scores come from a tiny
logistic regression fitted here on the history: a stand-in for the trainer's model, good enough to make
prediction drift and delayed-label performance real, and labelled as such wherever it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flywheel_core import feature_pipeline, model_repo, ondemand, schema, sim
from flywheel_drift._performance import average_precision, calibration_error, roc_auc

START = "2026-01-01"
HISTORY_DAYS = 60
TRAIN_DAYS = (38, 52)
REFERENCE_DAYS = (45, 60)
REFERENCE_ROWS = 5000
NUMERIC = list(schema.NUMERIC_FEATURES)


def model_inputs(all_tx: pd.DataFrame, rows: pd.DataFrame, defaults: dict[str, float]) -> np.ndarray:
    """The model input of `rows` (a subset of `all_tx`), point in time."""
    card = feature_pipeline.card_activity(all_tx).rename(columns={"event_timestamp": "card_ts"})
    merchant = feature_pipeline.merchant_risk(all_tx).rename(columns={"event_timestamp": "merchant_ts"})
    frame = rows.copy()
    frame["as_of"] = schema.as_of(frame["event_timestamp"]).astype("datetime64[us, UTC]")
    frame = frame.sort_values("as_of", kind="mergesort")
    card["card_ts"] = card["card_ts"].astype("datetime64[us, UTC]")
    merchant["merchant_ts"] = merchant["merchant_ts"].astype("datetime64[us, UTC]")
    frame = pd.merge_asof(frame, card.sort_values("card_ts"), left_on="as_of", right_on="card_ts", by="card_id",
                          direction="backward", tolerance=pd.Timedelta(days=30))
    frame = pd.merge_asof(frame, merchant.sort_values("merchant_ts"), left_on="as_of", right_on="merchant_ts",
                          by="merchant_id", direction="backward", tolerance=pd.Timedelta(days=2))
    frame["event_hour"] = frame["event_timestamp"].dt.hour
    frame = pd.concat([frame, ondemand.transaction_context(frame)], axis=1)
    frame = frame.set_index("transaction_id").loc[rows["transaction_id"]].reset_index()
    return schema.vectorize_frame(frame, defaults)


@dataclass
class World:
    config: sim.SimConfig
    history: pd.DataFrame
    model: object
    defaults: dict[str, float]
    reference_x: np.ndarray
    reference_p: np.ndarray
    test_metrics: dict[str, float]

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x[:, : len(NUMERIC)])[:, 1].astype(np.float32)  # type: ignore[attr-defined]

    def live(self, scenario: str, n: int, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """`n` live transactions under `scenario`: (transactions, model inputs, scores)."""
        live = sim.generate_live(self.config, scenario, n, seed=seed)
        x = model_inputs(pd.concat([self.history, live], ignore_index=True), live, self.defaults)
        return live, x, self.score(x)


def _days(frame: pd.DataFrame, start: pd.Timestamp, days: tuple[int, int]) -> pd.DataFrame:
    t = frame["event_timestamp"]
    return frame[(t >= start + pd.Timedelta(days=days[0])) & (t < start + pd.Timedelta(days=days[1]))]


@lru_cache(maxsize=1)
def world() -> World:
    # 60 days, not the preset's 30: the 30-day features (merchant_fraud_rate_30d, amount_mean_30d) are
    # still warming up during the first 30 days of a history, and a reference taken from that period
    # differs from live traffic for that reason alone (the drift service rightly says so).
    preset = sim.preset("default", seed=7, start=START)
    config = sim.SimConfig(n_cards=preset.n_cards, n_merchants=preset.n_merchants, days=HISTORY_DAYS,
                           start=preset.start, seed=preset.seed)
    history = sim.generate_history(config)
    start = pd.Timestamp(START, tz="UTC")
    defaults = {name: 0.0 for name in NUMERIC}
    x_all = model_inputs(history, history, defaults)
    y_all = history["is_fraud"].to_numpy()
    t = history["event_timestamp"]
    day = ((t - start) / pd.Timedelta(days=1)).to_numpy()
    train = (day >= TRAIN_DAYS[0]) & (day < TRAIN_DAYS[1])
    test = (t >= start + pd.Timedelta(days=TRAIN_DAYS[1])).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, class_weight=None))
    model.fit(x_all[train][:, : len(NUMERIC)], y_all[train])
    w = World(config, history, model, defaults, np.zeros(0), np.zeros(0), {})
    p_test = w.score(x_all[test])
    w.test_metrics = {"roc_auc": roc_auc(y_all[test], p_test), "pr_auc": average_precision(y_all[test], p_test),
                      "ece": calibration_error(y_all[test], p_test, 15), "rows": int(test.sum())}
    reference = np.flatnonzero((t >= start + pd.Timedelta(days=REFERENCE_DAYS[0])).to_numpy())
    pick = np.sort(np.random.default_rng(0).choice(reference, min(REFERENCE_ROWS, len(reference)), replace=False))
    w.reference_x = x_all[pick]
    w.reference_p = w.score(w.reference_x)
    return w


def publish(w: World, repo: Path, model: str = "fraud") -> Path:
    """Publish a version with this world's reference, as the trainer would (no ONNX: not needed here)."""
    staging = model_repo.staging_path(repo, model)
    frame = pd.DataFrame(w.reference_x, columns=[c["name"] for c in schema.COLUMNS])
    frame["probability"] = w.reference_p
    frame.to_parquet(staging / "drift_reference.parquet", index=False)
    metadata = {
        "feature_service": schema.FEATURE_SERVICE,
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, schema.INPUT_DIM], "columns": schema.COLUMNS},
        "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
        "defaults": w.defaults,
        "metrics": {"torch": {"test": w.test_metrics}, "ece_bins": 15},
    }
    return model_repo.publish(staging, repo, model, metadata)
