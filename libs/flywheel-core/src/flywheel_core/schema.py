"""The model input contract: which columns, in which order, and how a raw row becomes a vector.

The trainer and the transformer both turn rows into model input through `vectorize` /
`vectorize_frame`, so training and serving cannot disagree on column order, hashing or defaults.
Normalisation and embeddings live inside the model; this module only lays values out.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

RAW_TRANSACTION_FIELDS = (
    "transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category", "channel",
    "event_timestamp",
)
"""The fields of a raw transaction as a caller sends it to the transformer (no label)."""

FEATURE_SERVICE = "fraud_v1"
"""The versioned Feast feature service that training and serving both name."""

CARD_FEATURES = (
    "txn_count_1h",
    "txn_count_24h",
    "amount_sum_24h",
    "amount_mean_30d",
    "distinct_countries_24h",
)
MERCHANT_FEATURES = (
    "merchant_txn_count_7d",
    "merchant_fraud_rate_30d",
    "merchant_amount_mean_30d",
)
ON_DEMAND_FEATURES = ("amount_log", "amount_to_card_mean", "hour_sin", "hour_cos", "is_night")

NUMERIC_FEATURES: tuple[str, ...] = CARD_FEATURES + MERCHANT_FEATURES + ON_DEMAND_FEATURES

# Bucket counts: enough to keep collisions rare for the simulator's cardinalities while keeping the
# embedding tables small. Bucket 0 is reserved for "missing".
HASHED_COLUMNS: dict[str, int] = {
    "card_id": 4096,
    "merchant_id": 1024,
    "country": 64,
    "merchant_category": 64,
    "channel": 16,
    "currency": 16,
}

DOMAIN_CATEGORICALS: tuple[str, ...] = ("channel", "country", "currency", "merchant_category")
"""Raw categorical fields whose training vocabulary a model version records (metadata `training_domain`), so
serving can flag a value the model never saw. Not card_id or merchant_id: a new card or merchant is
everyday traffic, reported as `unknown_entities` by the online store, not as an input the model never saw."""

DOMAIN_NUMERICS: tuple[str, ...] = ("amount",)
"""Raw numeric fields whose training range (min, max) a model version records in `training_domain`."""

FEATURE_VIEW_TTL_S: dict[str, int] = {"card_activity": 30 * 86_400, "merchant_risk": 2 * 86_400}
"""Each online view's ttl in seconds, as feature_repo/views.py declares it (the features service's tests compare
them). Training's point-in-time join treats a row older than this before the transaction as missing; serving
must do the same from the event timestamp the online store returns, against the transaction's time (not the
wall clock, which is what the online store itself would judge by)."""

FEATURE_TTL_S: dict[str, int] = {
    **{name: FEATURE_VIEW_TTL_S["card_activity"] for name in CARD_FEATURES},
    **{name: FEATURE_VIEW_TTL_S["merchant_risk"] for name in MERCHANT_FEATURES},
}
"""The ttl of each online feature's view."""

ONLINE_FEATURE_REFS: tuple[str, ...] = tuple(f"card_activity:{name}" for name in CARD_FEATURES) + tuple(
    f"merchant_risk:{name}" for name in MERCHANT_FEATURES
)
"""Feature references fetched from the online store; on-demand features are computed locally."""

COLUMNS: list[dict[str, Any]] = [{"name": name, "kind": "numeric"} for name in NUMERIC_FEATURES] + [
    {"name": name, "kind": "hashed", "buckets": buckets} for name, buckets in HASHED_COLUMNS.items()
]
"""The model input columns in order, as written to metadata.json `input.columns`."""

INPUT_DIM = len(COLUMNS)
INPUT_NAME = "input"
OUTPUT_NAME = "probability"

AS_OF_OFFSET = timedelta(microseconds=1)


def as_of(ts: datetime | pd.Timestamp | pd.Series) -> Any:
    """The instant whose feature values a transaction at `ts` may see: just before itself.

    Card activity rows include the transaction they are stamped with; stepping back 1 µs (the data's resolution) makes a
    point-in-time join return the state the online store holds when that transaction is scored live.
    """
    return ts - AS_OF_OFFSET


def bucket(column: str, value: Any) -> int:
    """The hashed bucket id of a categorical value; 0 when the value is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    buckets = HASHED_COLUMNS[column]
    return 1 + zlib.crc32(f"{column}={value}".encode()) % (buckets - 1)


def _numeric(value: Any, default: float) -> float:
    if value is None:
        return default
    number = float(value)
    return default if math.isnan(number) else number


def vectorize(rows: Iterable[Mapping[str, Any]], defaults: Mapping[str, float] | None = None) -> list[list[float]]:
    """Lay out raw rows (feature name -> value) as model input rows.

    A numeric feature that is absent, None or NaN takes `defaults[name]` (0.0 when no default is
    given); a categorical value that is absent takes bucket 0.
    """
    defaults = defaults or {}
    fills = [float(defaults.get(name, 0.0)) for name in NUMERIC_FEATURES]
    vectors = []
    for row in rows:
        vector = [_numeric(row.get(name), fill) for name, fill in zip(NUMERIC_FEATURES, fills, strict=True)]
        vector.extend(float(bucket(column, row.get(column))) for column in HASHED_COLUMNS)
        vectors.append(vector)
    return vectors


def vectorize_frame(frame: pd.DataFrame, defaults: Mapping[str, float] | None = None) -> np.ndarray:
    """The vectorised twin of `vectorize` for training-size frames: float32 array [rows, INPUT_DIM]."""
    defaults = defaults or {}
    out = np.empty((len(frame), INPUT_DIM), dtype=np.float32)
    for i, name in enumerate(NUMERIC_FEATURES):
        values = pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(np.nan, index=frame.index)
        out[:, i] = values.astype("float64").fillna(float(defaults.get(name, 0.0))).to_numpy()
    offset = len(NUMERIC_FEATURES)
    for j, column in enumerate(HASHED_COLUMNS):
        source = frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)
        codes, uniques = pd.factorize(source, use_na_sentinel=True)
        table = np.array([bucket(column, value) for value in uniques] + [0], dtype=np.float32)
        out[:, offset + j] = table[codes]  # code -1 (missing) indexes the trailing 0
    return out
