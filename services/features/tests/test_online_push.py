"""The stream's online write: what Feast's push writes, byte for byte, with the views read once per registry
version. Cards of their own (ids no history has), so the session store's other readers see nothing move."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import pandas as pd
import pytest
from feast import FeatureStore
from feast.data_source import PushMode
from feast.errors import PushSourceNotFoundException

from flywheel_core import card_stream
from flywheel_features._online_push import OnlinePush

SOURCE = "card_activity_push"
EPOCH = datetime(1970, 1, 1)
T_US = 1_767_225_600_000_000 + 123_456_789  # 2026-01-01T00:02:03.456789Z, sub-second on purpose


def _rows(amount_sum: float) -> list[card_stream.CardActivityRow]:
    return [
        card_stream.CardActivityRow("c_push_1", T_US, 1, 3, amount_sum, amount_sum / 3, 2),
        card_stream.CardActivityRow("c_push_2", T_US + 1, 7, 40, 1e9 + 0.1, 0.30000000000000004, 1),
    ]


def _columns(rows: list[card_stream.CardActivityRow]) -> dict[str, list]:
    return {name: [getattr(r, name) for r in rows]
            for name in ("card_id", "txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d",
                         "distinct_countries_24h")}


def _stored(store: FeatureStore) -> list[tuple]:
    """The online table's rows of the test cards, as Feast's SQLite store holds them."""
    path = store.config.online_store.path
    with sqlite3.connect(path if path.startswith("/") else str(store.repo_path / path)) as db:
        table = f"{store.project}_card_activity"
        return db.execute(f'SELECT entity_key, feature_name, value, event_ts, created_ts FROM "{table}" '
                          "ORDER BY entity_key, feature_name").fetchall()


def _of_test_cards(rows: list[tuple]) -> list[tuple]:
    return [r for r in rows if b"c_push_" in r[0]]


def test_the_online_push_writes_exactly_what_feasts_push_writes(store: FeatureStore):
    rows = _rows(60.25)
    store.push(SOURCE, card_stream.rows_frame(rows), to=PushMode.ONLINE)
    by_feast = _of_test_cards(_stored(store))
    assert len(by_feast) == 2 * 5

    OnlinePush(store, SOURCE).push(_columns(_rows(1.5)), [EPOCH] * 2)  # something else in between
    assert _of_test_cards(_stored(store)) != by_feast
    OnlinePush(store, SOURCE).push(_columns(rows), [EPOCH + timedelta(microseconds=r.event_us) for r in rows])
    assert _of_test_cards(_stored(store)) == by_feast


def test_the_served_features_are_the_pushed_rows(store: FeatureStore):
    rows = _rows(99.0)
    OnlinePush(store, SOURCE).push(_columns(rows), [EPOCH + timedelta(microseconds=r.event_us) for r in rows])
    served = store.get_online_features(
        features=["card_activity:txn_count_1h", "card_activity:amount_sum_24h", "card_activity:amount_mean_30d"],
        entity_rows=[{"card_id": r.card_id} for r in rows],
    ).to_dict()
    assert served["txn_count_1h"] == [1, 7]
    assert served["amount_sum_24h"] == [99.0, 1e9 + 0.1]
    assert served["amount_mean_30d"] == [33.0, 0.30000000000000004]


def test_the_views_are_read_once_per_registry_version(store: FeatureStore):
    push = OnlinePush(store, SOURCE)
    first = push._resolve()
    assert first is not None and [v.view.name for v in first] == ["card_activity"]
    assert push._resolve() is first  # the same registry: not read again
    store.refresh_registry()  # what the feature server does every REGISTRY_TTL_SECONDS, and what an apply changes
    again = push._resolve()
    assert again is not first and [v.view.name for v in again] == ["card_activity"]


def test_an_unknown_push_source_is_feasts_error(store: FeatureStore):
    with pytest.raises(PushSourceNotFoundException):
        store.push("no_such_push", pd.DataFrame({"card_id": ["c_push_1"]}), to=PushMode.ONLINE)
    with pytest.raises(PushSourceNotFoundException):
        OnlinePush(store, "no_such_push").push({"card_id": ["c_push_1"]}, [EPOCH])
