"""The training set: only labels known at the cut-off, features as the online store held them."""

import numpy as np
import pandas as pd
import pytest

from flywheel_core import schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_trainer import ConfigError
from flywheel_trainer._dataset import build_training_set, label_window, labelled_at

from conftest import FEATURE_REPO

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _tx(rows):
    return pd.DataFrame(
        [{"transaction_id": f"t{i}", "event_timestamp": T0 + pd.Timedelta(hours=e), "label_timestamp": T0 + pd.Timedelta(hours=lab),
          "is_fraud": f} for i, (e, lab, f) in enumerate(rows)]
    )


def test_only_mature_transactions_with_labels_known_at_the_cutoff_are_kept():
    tx = _tx([(0, 168, 0), (1, 30, 1), (10, 200, 0), (150, 160, 1), (170, 171, 1)])
    cutoff = T0 + pd.Timedelta(hours=190)
    window = label_window(tx, cutoff)
    assert window == pd.Timedelta(hours=168)  # the longest delay among known labels
    kept = labelled_at(tx, cutoff, window)
    # t2's label arrives after the cut-off; t3 and t4 are younger than the window (only frauds would
    # be labelled that early, so keeping them would inflate the fraud rate).
    assert kept["transaction_id"].tolist() == ["t0", "t1"]


def test_training_set_never_uses_a_label_unknown_at_the_cutoff(training_set):
    frame = training_set.frame
    assert (frame["label_timestamp"] <= training_set.cutoff).all()
    assert (frame["event_timestamp"] <= training_set.cutoff - training_set.window).all()
    assert frame["event_timestamp"].is_monotonic_increasing
    assert training_set.counts["labelled_at_cutoff"] == len(frame) > 0
    assert training_set.counts["excluded_within_label_window"] > 0


def test_features_are_the_state_just_before_each_transaction(training_set, small_data):
    """Each view's latest row at or before as_of(event_timestamp), within the view's ttl: the card
    state before this transaction (never including it) and the last daily merchant snapshot."""
    frame = training_set.frame.sort_values("event_timestamp")
    card = read_parquet(small_data / "card_activity.parquet").sort_values("event_timestamp")
    merchant = read_parquet(small_data / "merchant_risk.parquet").sort_values("event_timestamp")
    entity = frame[["transaction_id", "card_id", "merchant_id"]].assign(event_timestamp=schema.as_of(frame["event_timestamp"]))
    expected = pd.merge_asof(entity, card, on="event_timestamp", by="card_id", tolerance=pd.Timedelta(days=30))
    expected = pd.merge_asof(expected, merchant, on="event_timestamp", by="merchant_id",
                             tolerance=pd.Timedelta(days=2))
    got = frame.set_index("transaction_id")
    expected = expected.set_index("transaction_id").loc[got.index]
    for name in schema.CARD_FEATURES + schema.MERCHANT_FEATURES:
        np.testing.assert_allclose(got[name].astype(float), expected[name].astype(float), equal_nan=True, err_msg=name)
    # A card's first transaction has no earlier state at all: missing, not its own values.
    first = ~frame.duplicated("card_id")
    assert frame.loc[first, "txn_count_1h"].isna().all()


def test_a_feast_data_dir_other_than_the_data_is_refused(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="FLYWHEEL_DATA_DIR"):
        build_training_set(FEATURE_REPO, small_data)


def test_a_data_window_keeps_only_the_newest_span_before_the_cutoff(small_data, training_set):
    window = pd.Timedelta(days=10)
    windowed = build_training_set(FEATURE_REPO, small_data, data_window=window)
    assert windowed.cutoff == training_set.cutoff
    assert (windowed.frame["event_timestamp"] > windowed.cutoff - window).all()
    newest = training_set.frame[training_set.frame["event_timestamp"] > training_set.cutoff - window]
    assert 0 < len(windowed.frame) == len(newest) < len(training_set.frame)
