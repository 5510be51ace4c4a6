"""The point-in-time training set: labelled transactions joined to their features through Feast.

Only transactions whose label is known at the training cut-off (`label_timestamp <= cutoff`) become
rows: a model trained at the cut-off could not have seen any other label. They must also be older than
the label window (the longest label delay), or the newest rows would be the quickly-labelled frauds
alone. Each row is stamped at
`flywheel_core.schema.as_of(event_timestamp)` so Feast's point-in-time join returns the feature
values the online store held just before the transaction, which is what serving sees.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flywheel_core import schema
from flywheel_core.feature_pipeline import LIVE_TRANSACTIONS_GLOB, read_parquet
from flywheel_core.model_repo import sha256_file
from flywheel_core.offline_store import OfflineStoreError, historical_features

from ._errors import ConfigError, DataError
from ._feast import close_offline_store, keep_feast_metrics_in_memory

log = logging.getLogger("flywheel_trainer")

TRANSACTIONS_FILE = "transactions.parquet"
DATA_DIR_ENV = "FLYWHEEL_DATA_DIR"
CATEGORICAL_COLUMNS = tuple(schema.HASHED_COLUMNS)
_TX_COLUMNS = ("transaction_id", "event_timestamp", "label_timestamp", "is_fraud", "amount", *CATEGORICAL_COLUMNS)


@dataclass
class TrainingSet:
    """Rows sorted by event time: ids, timestamps, label, raw categoricals and numeric features."""

    frame: pd.DataFrame
    cutoff: pd.Timestamp
    window: pd.Timedelta = pd.Timedelta(0)
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["is_fraud"].to_numpy().astype("int64")


def read_transactions(data_dir: Path) -> pd.DataFrame:
    """The history and every live part (a transaction in both counts once, as the history has it)."""
    path = Path(data_dir) / TRANSACTIONS_FILE
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: simulate the history first (python -m flywheel_core.sim history --out {data_dir})"
        )
    frame = read_parquet(path)
    parts = [read_parquet(part) for part in sorted(Path(data_dir).glob(LIVE_TRANSACTIONS_GLOB))]
    if parts:
        frame = pd.concat([frame, *parts], ignore_index=True).drop_duplicates("transaction_id", keep="first")
    missing = [c for c in _TX_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it does not follow docs/architecture.md")
    for column in ("event_timestamp", "label_timestamp"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def label_window(transactions: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Timedelta:
    """The longest label delay among labels known at `cutoff`: how long a transaction takes to mature."""
    known = transactions["label_timestamp"] <= cutoff
    delays = transactions.loc[known, "label_timestamp"] - transactions.loc[known, "event_timestamp"]
    return delays.max() if len(delays) else pd.Timedelta(0)


def labelled_at(transactions: pd.DataFrame, cutoff: pd.Timestamp, window: pd.Timedelta) -> pd.DataFrame:
    """Transactions whose label was known at `cutoff` and that are at least `window` old, oldest first.

    The age condition matters as much as the label one: legitimate transactions are labelled only when
    the chargeback window closes, while frauds are labelled sooner, so the newest labelled rows would be
    nearly all fraud. Keeping only rows older than the longest label delay keeps the fraud rate honest.
    """
    known = (transactions["label_timestamp"] <= cutoff) & (transactions["event_timestamp"] <= cutoff - window)
    return (
        transactions.loc[known].sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    )


def entity_rows(labelled: pd.DataFrame) -> pd.DataFrame:
    """The Feast entity frame: join keys, the as-of stamp and the request-source columns."""
    return pd.DataFrame(
        {
            "transaction_id": labelled["transaction_id"].to_numpy(),
            "card_id": labelled["card_id"].to_numpy(),
            "merchant_id": labelled["merchant_id"].to_numpy(),
            "event_timestamp": schema.as_of(labelled["event_timestamp"]),
            "amount": labelled["amount"].astype("float64").to_numpy(),
            "event_hour": labelled["event_timestamp"].dt.hour.astype("int64").to_numpy(),
        }
    )


def _point_feast_at(data_dir: Path) -> None:
    """feature_store.yaml finds its registry and tables under ${FLYWHEEL_DATA_DIR}: make it `data_dir`."""
    wanted = Path(data_dir).resolve()
    current = os.environ.get(DATA_DIR_ENV)
    if not current:
        os.environ[DATA_DIR_ENV] = str(wanted)
    elif Path(current).resolve() != wanted:
        raise ConfigError(
            f"{DATA_DIR_ENV}={current} but --data is {data_dir}: the feature store would join features of other "
            f"data to these transactions; point both at the same directory"
        )


def retrieve(store: Any, entity: pd.DataFrame) -> pd.DataFrame:
    """The feature service's values at each entity row's as-of instant, one row per entity row (the repository's
    offline store must be DuckDB: flywheel_core.offline_store says why)."""
    try:
        return historical_features(store, entity, schema.FEATURE_SERVICE, key="transaction_id")
    except OfflineStoreError as e:
        raise DataError(str(e)) from e


def _source_lineage(data_dir: Path, transactions: pd.DataFrame) -> dict[str, Any]:
    files = {p.name: sha256_file(p) for p in sorted(Path(data_dir).glob("*.parquet"))}
    ts = transactions["event_timestamp"]
    return {
        "data_files_sha256": files,
        "transactions": {
            "rows": int(len(transactions)),
            "start": ts.min().isoformat().replace("+00:00", "Z"),
            "end": ts.max().isoformat().replace("+00:00", "Z"),
        },
    }


def point_in_time_features(
    feature_repo: Path, data_dir: Path, transactions: pd.DataFrame, *, yaml: str = "feature_store.yaml"
) -> pd.DataFrame:
    """`transactions` (one row per id: transaction_id, card_id, merchant_id, amount, event_timestamp and any other
    columns) with the feature service's values at each one's as-of instant appended: the join training makes, and
    the skew check rebuilds served rows with (`_skew`). Raw categoricals stay the transactions' own, not Feast's:
    they are request data at serving time."""
    keep_feast_metrics_in_memory()
    from feast import FeatureStore  # imported here: Feast takes seconds to import and tests of the rest need none

    _point_feast_at(data_dir)
    started = time.perf_counter()
    try:
        store = FeatureStore(repo_path=str(feature_repo), fs_yaml_file=Path(feature_repo) / yaml)
        features = retrieve(store, entity_rows(transactions))
    except DataError:
        raise
    except Exception as e:  # Feast raises many unrelated types; all mean the same thing to this job
        raise DataError(
            f"Feast could not join features from {feature_repo} (service {schema.FEATURE_SERVICE}): "
            f"{type(e).__name__}: {e}. Run `feast apply` on the repository (make features) and check its data paths."
        ) from e
    finally:
        close_offline_store()
    log.info("feast point-in-time join: %d rows in %.1fs", len(features), time.perf_counter() - started)

    missing = [name for name in schema.NUMERIC_FEATURES if name not in features.columns]
    if missing:
        raise DataError(f"feature service {schema.FEATURE_SERVICE} did not return {missing}")
    return transactions.merge(
        features[["transaction_id", *schema.NUMERIC_FEATURES]], on="transaction_id", how="left", validate="one_to_one"
    )


def build_training_set(
    feature_repo: Path,
    data_dir: Path,
    cutoff: pd.Timestamp | None = None,
    window: pd.Timedelta | None = None,
    *,
    yaml: str = "feature_store.yaml",
    data_window: pd.Timedelta | None = None,
) -> TrainingSet:
    """Point-in-time features for every mature transaction labelled at `cutoff` (default: last event).

    `window` is the label maturity (default: inferred with `label_window`). `data_window` keeps only transactions
    of that span before the cut-off (a sliding window; default: the whole history).
    """
    transactions = read_transactions(data_dir)
    if transactions.empty:
        raise DataError(f"{Path(data_dir) / TRANSACTIONS_FILE} has no rows")
    cutoff = pd.Timestamp(cutoff) if cutoff is not None else transactions["event_timestamp"].max()
    if cutoff.tzinfo is None:
        cutoff = cutoff.tz_localize("UTC")
    window = label_window(transactions, cutoff) if window is None else pd.Timedelta(window)
    labelled = labelled_at(transactions, cutoff, window)
    if data_window is not None:
        labelled = labelled.loc[labelled["event_timestamp"] > cutoff - data_window].reset_index(drop=True)
    if labelled.empty:
        raise DataError(
            f"no transaction older than the label window ({window}) has a label known at the cut-off "
            f"{cutoff.isoformat()}" + (f" within the data window ({data_window})" if data_window is not None else "")
            + ": simulate a longer history"
        )
    log.info(
        "training set: %d of %d transactions labelled at cut-off %s and older than the %s label window (%d frauds)",
        len(labelled), len(transactions), cutoff.isoformat(), window, int(labelled["is_fraud"].sum()),
    )

    frame = point_in_time_features(feature_repo, data_dir, labelled[list(_TX_COLUMNS)], yaml=yaml)
    return TrainingSet(
        frame=frame, cutoff=cutoff, window=window, counts=selection_counts(transactions, labelled, cutoff, window),
        sources=_source_lineage(data_dir, transactions),
    )


def selection_counts(
    transactions: pd.DataFrame, labelled: pd.DataFrame, cutoff: pd.Timestamp, window: pd.Timedelta
) -> dict[str, int]:
    happened = transactions["event_timestamp"] <= cutoff
    mature = transactions["event_timestamp"] <= cutoff - window
    return {
        "transactions": int(len(transactions)),
        "labelled_at_cutoff": int(len(labelled)),
        "frauds": int(labelled["is_fraud"].sum()),
        "excluded_label_unknown": int((mature & (transactions["label_timestamp"] > cutoff)).sum()),
        "excluded_within_label_window": int((happened & ~mature).sum()),
        "excluded_after_cutoff": int((~happened).sum()),
    }
