"""Point-in-time reads of Feast's offline store, one way for every batch path that makes them: the trainer's
training set and the features service's `historical` command.

The store is passed in (a `feast.FeatureStore`), never imported here: this library stays free of Feast.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import pandas as pd


class OfflineStoreError(ValueError):
    """The offline store answered something a point-in-time join must never give."""


class _Job(Protocol):
    def to_df(self) -> pd.DataFrame: ...


class FeatureStoreLike(Protocol):
    def get_feature_service(self, name: str) -> Any: ...

    def get_historical_features(self, *, entity_df: pd.DataFrame, features: Any) -> _Job: ...


def historical_features(store: FeatureStoreLike, entities: pd.DataFrame, feature_service: str,
                        key: str | None = None) -> pd.DataFrame:
    """`feature_service`'s values at each entity row's as-of instant: exactly one output row per entity row
    (and, with `key`, one per key), or OfflineStoreError. Feast's dask `file` store drops an entity row outright
    when a view has rows for its key but none within the ttl (a card's first transaction), which would shrink
    and bias a training set silently: the DuckDB offline store does not, and this check says which happened."""
    service = store.get_feature_service(feature_service)
    with warnings.catch_warnings():
        # Feast's own notices, about Feast: nothing a caller can act on.
        warnings.filterwarnings(
            "ignore", message="On demand feature view is an experimental feature", category=RuntimeWarning
        )
        warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
        frame = store.get_historical_features(entity_df=entities, features=service).to_df()
    repeated = f" with repeated {key}" if key is not None and key in frame and frame[key].duplicated().any() else ""
    if len(frame) != len(entities) or repeated:
        raise OfflineStoreError(
            f"the offline store returned {len(frame)} rows for {len(entities)} entity rows{repeated}; expected one "
            "per entity row (use the duckdb offline store: the dask `file` store drops rows)"
        )
    return frame
