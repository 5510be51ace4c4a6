import numpy as np
import pandas as pd
import pytest

from flywheel_core import feature_pipeline as fp
from flywheel_core import sim

T0 = pd.Timestamp("2026-03-01T00:00:00Z")


def transactions(rows: list[tuple]) -> pd.DataFrame:
    """Hand-made rows: (card, merchant, minutes after T0, amount, country, is_fraud, label delay in hours)."""
    columns = ["card_id", "merchant_id", "minutes", "amount", "country", "is_fraud", "label_h"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["transaction_id"] = [f"t{i:010d}" for i in range(1, len(frame) + 1)]
    frame["event_timestamp"] = (T0 + pd.to_timedelta(frame["minutes"], unit="min")).astype("datetime64[us, UTC]")
    frame["label_timestamp"] = frame["event_timestamp"] + pd.to_timedelta(frame["label_h"], unit="h")
    return frame.drop(columns=["minutes", "label_h"])


def test_card_windows_count_the_transaction_itself_and_drop_what_left_the_window():
    day = 24 * 60
    frame = transactions([
        ("c1", "m1", 0, 10.0, "US", 0, 1),
        ("c1", "m1", 30, 20.0, "US", 0, 1),
        ("c1", "m1", 60, 40.0, "FR", 0, 1),  # exactly 1 h after the first: the first has left the 1 h window
        ("c2", "m1", 61, 5.0, "DE", 0, 1),  # another card: never mixed in
        ("c1", "m1", day + 30, 80.0, "US", 0, 1),  # exactly 24 h after the 2nd: 1st and 2nd out of 24 h
        ("c1", "m1", 31 * day, 1.0, "US", 0, 1),  # 30 days after the 3rd: only itself and the 4th in 30 d
    ])
    got = fp.card_activity(frame).set_index(["card_id", "event_timestamp"]).sort_index()
    c1 = got.loc["c1"]
    assert c1["txn_count_1h"].tolist() == [1, 2, 2, 1, 1]
    assert c1["txn_count_24h"].tolist() == [1, 2, 3, 2, 1]
    assert c1["amount_sum_24h"].tolist() == pytest.approx([10.0, 30.0, 70.0, 120.0, 1.0])
    assert c1["amount_mean_30d"].tolist() == pytest.approx([10.0, 15.0, 70 / 3, 150 / 4, 81 / 2])
    assert c1["distinct_countries_24h"].tolist() == [1, 1, 2, 2, 1]
    assert got.loc["c2"]["txn_count_24h"].tolist() == [1]


def test_card_activity_has_the_contract_columns_and_one_row_per_transaction():
    history = sim.generate_history(sim.preset("small", seed=1, start="2026-01-01"))
    table = fp.card_activity(history)
    assert tuple(table.columns) == fp.CARD_ACTIVITY_COLUMNS
    assert len(table) == len(history)
    assert str(table["event_timestamp"].dtype) == "datetime64[us, UTC]"
    for name in ("txn_count_1h", "txn_count_24h", "distinct_countries_24h"):
        assert table[name].dtype == np.int64 and (table[name] >= 1).all()
    assert (table["txn_count_1h"] <= table["txn_count_24h"]).all()


def test_card_activity_matches_a_pandas_rolling_reference():
    history = sim.generate_history(sim.preset("small", seed=2, start="2026-01-01"))
    got = fp.card_activity(history).sort_values(["card_id", "event_timestamp"]).reset_index(drop=True)
    ordered = history.sort_values(["card_id", "event_timestamp"]).reset_index(drop=True)
    rolling = ordered.groupby("card_id").rolling("24h", on="event_timestamp")["amount"]
    expected = rolling.agg(["count", "sum"]).reset_index(drop=True)
    assert got["txn_count_24h"].tolist() == expected["count"].astype("int64").tolist()
    assert got["amount_sum_24h"].to_numpy() == pytest.approx(expected["sum"].to_numpy())


def test_merchant_snapshots_are_daily_at_midnight_from_the_first_day_to_the_day_after_the_last():
    frame = transactions([("c1", "m1", 90, 10.0, "US", 0, 1), ("c1", "m2", 2 * 24 * 60 + 5, 30.0, "US", 0, 1)])
    table = fp.merchant_risk(frame)
    assert tuple(table.columns) == fp.MERCHANT_RISK_COLUMNS
    days = sorted(table["event_timestamp"].unique())
    assert days == [T0 + pd.Timedelta(days=d) for d in range(4)]
    assert len(table) == 2 * 4  # every merchant on every day


def test_merchant_snapshot_counts_only_transactions_before_it():
    frame = transactions([("c1", "m1", 60, 10.0, "US", 0, 1), ("c1", "m1", 24 * 60 - 1, 30.0, "US", 0, 1),
                          ("c1", "m1", 24 * 60, 50.0, "US", 0, 1)])  # the last is *at* day 1 00:00: not before it
    day1 = fp.merchant_risk(frame).set_index("event_timestamp").loc[T0 + pd.Timedelta(days=1)]
    assert day1["merchant_txn_count_7d"] == 2
    assert day1["merchant_amount_mean_30d"] == pytest.approx(20.0)


def test_no_future_label_leaks_into_the_merchant_fraud_rate():
    # Two frauds on day 0 whose chargebacks arrive on day 0 (2 h later) and on day 3; one legitimate
    # transaction whose window closes on day 1.
    frame = transactions([
        ("c1", "m1", 60, 10.0, "US", 1, 2),
        ("c2", "m1", 120, 10.0, "US", 1, 3 * 24),
        ("c3", "m1", 180, 10.0, "US", 0, 24),
    ])
    snapshots = fp.to_us(pd.Series([T0 + pd.Timedelta(days=d) for d in range(1, 6)]))
    rate = fp.merchant_risk(frame, snapshots).set_index("event_timestamp")["merchant_fraud_rate_30d"]
    day = lambda d: T0 + pd.Timedelta(days=d)  # noqa: E731
    # Day 1 00:00: only the first fraud is labelled (day 0 03:00); the legitimate label comes at day 1 03:00.
    assert rate[day(1)] == pytest.approx(1.0)
    # Day 2: the legitimate label is known now; the second fraud's chargeback (day 3 02:00) is not.
    assert rate[day(2)] == pytest.approx(1 / 2)
    # Day 3 00:00 is still before the second chargeback.
    assert rate[day(3)] == pytest.approx(1 / 2)
    assert rate[day(4)] == pytest.approx(2 / 3)


def test_merchant_fraud_rate_is_missing_when_nothing_is_labelled_yet():
    frame = transactions([("c1", "m1", 60, 10.0, "US", 0, 7 * 24)])
    table = fp.merchant_risk(frame).set_index("event_timestamp")
    assert np.isnan(table.loc[T0 + pd.Timedelta(days=1), "merchant_fraud_rate_30d"])
    assert table.loc[T0 + pd.Timedelta(days=1), "merchant_txn_count_7d"] == 1


def test_merchant_windows_forget_transactions_older_than_7_and_30_days():
    frame = transactions([("c1", "m1", 60, 10.0, "US", 0, 1), ("c1", "m1", 20 * 24 * 60, 30.0, "US", 0, 1),
                          ("c1", "m1", 40 * 24 * 60, 1.0, "US", 0, 1)])
    table = fp.merchant_risk(frame).set_index("event_timestamp")
    day8, day31 = T0 + pd.Timedelta(days=8), T0 + pd.Timedelta(days=31)
    assert table.loc[day8, "merchant_txn_count_7d"] == 0
    assert table.loc[day8, "merchant_amount_mean_30d"] == pytest.approx(10.0)
    assert table.loc[day31, "merchant_amount_mean_30d"] == pytest.approx(30.0)  # day 0's left the 30 d window


def test_feature_tables_of_the_default_history_have_a_card_row_per_transaction(tmp_path):
    # How fast they are computed is bench's business (the module docstring's figure), not a unit test's.
    history = sim.generate_history(sim.preset("default", seed=7, start="2026-01-01"))
    written = fp.write_feature_tables(history, tmp_path)
    assert len(fp.read_parquet(written[fp.CARD_ACTIVITY_FILE])) == len(history)


def test_read_parquet_reads_what_write_parquet_wrote_with_its_types(tmp_path):
    frame = pd.DataFrame({"transaction_id": ["t1", "t2"], "amount": [1.5, 2.0],
                          "event_timestamp": pd.to_datetime(["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"])})
    path = fp.write_parquet(frame, tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(fp.read_parquet(path), frame)
    pd.testing.assert_frame_equal(fp.read_parquet(path, columns=["amount"]), frame[["amount"]])

