"""The stream step: live transactions -> card_activity rows, the batch pipeline's rows, online and offline.

The equivalence is a property over random small histories (pure code); the service tests run the real
app over a real Feast store of their own (their pushes and offline parts must not reach the other
tests' store).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from flywheel_core import card_stream, feature_pipeline, sim
from flywheel_core.feature_pipeline import read_parquet
from flywheel_features import (
    Settings,
    create_app,
    historical,
    open_store,
)

from conftest import REPO_ROOT, running

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MINUTE_US = 60_000_000


@st.composite
def histories(draw: st.DrawFn) -> pd.DataFrame:
    """Up to 40 transactions of up to 4 cards over about 40 days, with ties at the same instant and minutes
    that land exactly on the 1 h / 24 h / 30 d window edges."""
    n = draw(st.integers(1, 40))
    edges = [0, 60, 24 * 60, 30 * 24 * 60]
    minutes = draw(st.lists(
        st.one_of(st.integers(0, 40 * 24 * 60), st.sampled_from(edges), st.sampled_from([e + 1 for e in edges])),
        min_size=n, max_size=n,
    ))
    return pd.DataFrame({
        "transaction_id": [f"t{i:010d}" for i in draw(st.permutations(range(n)))],
        "card_id": draw(st.lists(st.sampled_from(["c1", "c2", "c3", "c4"]), min_size=n, max_size=n)),
        "event_timestamp": feature_pipeline.from_us(np.array(minutes, dtype="int64") * MINUTE_US + T0_US),
        "amount": draw(st.lists(st.floats(0.5, 5000, allow_nan=False).map(lambda a: round(a, 2)), min_size=n, max_size=n)),
        "country": draw(st.lists(st.sampled_from(["US", "FR", "DE"]), min_size=n, max_size=n)),
    })


@hypothesis_settings(max_examples=200, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_streaming_a_history_transaction_by_transaction_gives_the_batch_pipelines_rows(history, rnd):
    batch = feature_pipeline.card_activity(history)
    # Fed in time order (as live traffic arrives), with some transactions delivered twice (retries).
    ordered = card_stream.transactions_of(history)
    stream = card_stream.CardHistory()
    rows = []
    for txn in ordered:
        rows.append(stream.add(txn))
        if rnd.random() < 0.2:
            assert stream.add(txn) == rows[-1]
    got = card_stream.rows_frame(rows).sort_values(["event_timestamp", "card_id"], kind="mergesort")
    got = got.reset_index(drop=True)
    counts = ["card_id", "event_timestamp", "txn_count_1h", "txn_count_24h", "distinct_countries_24h"]
    pd.testing.assert_frame_equal(got[counts], batch[counts])
    for column in ("amount_sum_24h", "amount_mean_30d"):  # the batch differences one running total
        np.testing.assert_allclose(got[column], batch[column], rtol=1e-9, atol=1e-6)


@pytest.fixture(scope="module")
def stream_settings(tmp_path_factory: pytest.TempPathFactory, tokens: Path) -> Settings:
    data = tmp_path_factory.mktemp("stream-data")
    history = sim.generate_history(sim.preset("small", seed=12, start="2026-01-01"))
    feature_pipeline.write_feature_tables(history, data)
    history.to_parquet(data / feature_pipeline.TRANSACTIONS_FILE, index=False)
    settings = Settings(repo_path=REPO_ROOT / "feature_repo", data_dir=data, stream_flush_rows=3,
                        read_token_file=tokens / "features-read", write_token_file=tokens / "features-write")
    # In a subprocess: feature_repo/sources.py reads FLYWHEEL_DATA_DIR when first imported, so a second apply
    # in this process (the session store's came first) would register the session's parquet paths.
    for command in ("apply", "materialize"):
        subprocess.run([sys.executable, "-m", "flywheel_features", command], cwd=REPO_ROOT, check=True,
                       env={**os.environ, "FLYWHEEL_DATA_DIR": str(data)}, capture_output=True, timeout=300)
    return settings


@pytest.fixture(scope="module")
def stream_url(stream_settings: Settings) -> Iterator[str]:
    with running(create_app(stream_settings)) as url:
        yield url


def _live(settings: Settings, card: str, minutes: float, amount: float = 42.0, country: str = "US") -> dict:
    history = read_parquet(settings.data_dir / feature_pipeline.TRANSACTIONS_FILE)
    at = history["event_timestamp"].max() + pd.Timedelta(minutes=minutes)
    return {"transaction_id": f"t9{int(minutes * 1000):09d}", "card_id": card, "amount": amount, "country": country,
            "event_timestamp": at.isoformat(), "merchant_id": "m00001"}


def _served(url: str, read_header: dict, card: str) -> dict:
    body = httpx.post(f"{url}/get-online-features", headers=read_header, json={
        "features": ["card_activity:txn_count_1h", "card_activity:txn_count_24h"], "entities": {"card_id": [card]}},
    ).json()
    return {name: result["values"][0] for name, result in zip(body["metadata"]["feature_names"], body["results"],
                                                                strict=True)}


def test_a_streamed_transaction_changes_the_cards_served_features_before_the_answer(
        stream_url, stream_settings, read_header, write_header):
    card = "c000123"
    before = _served(stream_url, read_header, card)
    first, second = _live(stream_settings, card, 1), _live(stream_settings, card, 2)
    answer = httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": [first]})
    assert answer.status_code == 200 and answer.json() == {"accepted": 1}
    after_one = _served(stream_url, read_header, card)
    httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": [second]})
    after_two = _served(stream_url, read_header, card)
    # What the batch pipeline gives these two transactions appended to the history.
    history = read_parquet(stream_settings.data_dir / feature_pipeline.TRANSACTIONS_FILE)
    live = pd.DataFrame([first, second]).assign(event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"]))
    batch = feature_pipeline.card_activity(pd.concat([history, live], ignore_index=True))
    expected = batch[batch["card_id"] == card].tail(2)[["txn_count_1h", "txn_count_24h"]].to_dict("records")
    assert expected[1]["txn_count_1h"] == 2 and before["txn_count_1h"] < 2  # the second counts the first
    assert [{k: after[k] for k in ("txn_count_1h", "txn_count_24h")} for after in (after_one, after_two)] == expected


def test_a_retried_transaction_is_not_counted_twice(stream_url, stream_settings, read_header, write_header):
    card = "c000124"
    txn = _live(stream_settings, card, 3)
    for _ in range(2):
        httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": [txn]})
    once = _served(stream_url, read_header, card)
    later = _live(stream_settings, card, 4)
    httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": [later]})
    assert _served(stream_url, read_header, card)["txn_count_1h"] == once["txn_count_1h"] + 1


def test_a_late_or_retried_older_transaction_does_not_put_the_cards_served_state_back_in_time(
        stream_url, stream_settings, read_header, write_header):
    card = "c000127"
    older, newer, late = (_live(stream_settings, card, m) for m in (30, 32, 31))
    for body in ([older], [newer]):
        httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": body})
    current = _served(stream_url, read_header, card)
    # A retry of the older one and a late arrival between the two: both are history, the newest row stays served.
    for body in ([older], [late], [late, older]):
        answer = httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": body})
        assert answer.status_code == 200, answer.text
        assert _served(stream_url, read_header, card) == current


def test_streamed_rows_reach_the_offline_store_for_training(stream_url, stream_settings, write_header):
    card = "c000125"
    txns = [_live(stream_settings, card, m) for m in (10, 11, 12)]  # FLUSH_ROWS=3: one part at the latest
    assert httpx.post(f"{stream_url}/stream/transactions", headers=write_header,
                      json={"transactions": txns}).status_code == 200
    assert list(stream_settings.data_dir.glob("card_activity.stream-*.parquet"))
    # As the trainer asks: the card's state just before a transaction one minute after the third.
    at = pd.Timestamp(txns[2]["event_timestamp"]) + pd.Timedelta(minutes=1)
    entity = pd.DataFrame({"card_id": [card], "merchant_id": ["m00001"], "event_timestamp": [at],
                           "amount": [1.0], "event_hour": [at.hour]})
    row = historical(open_store(stream_settings), entity, "fraud_v1").iloc[0]
    assert row["txn_count_1h"] >= 3  # the three streamed ones, one minute apart


def test_a_restart_rebuilds_the_card_state_from_the_log(stream_url, stream_settings, read_header, write_header):
    card = "c000126"
    httpx.post(f"{stream_url}/stream/transactions", headers=write_header,
               json={"transactions": [_live(stream_settings, card, 20)]})
    served = _served(stream_url, read_header, card)
    # A second server on the same directory (the first one's state in memory is not shared): its next row
    # for the card counts the transaction the first one logged.
    with running(create_app(stream_settings)) as restarted:
        httpx.post(f"{restarted}/stream/transactions", headers=write_header,
                   json={"transactions": [_live(stream_settings, card, 21)]})
        assert _served(restarted, read_header, card)["txn_count_1h"] == served["txn_count_1h"] + 1


def test_only_the_write_token_may_stream(stream_url, stream_settings, read_header):
    body = {"transactions": [_live(stream_settings, "c000127", 30)]}
    for headers in ({}, read_header):
        answer = httpx.post(f"{stream_url}/stream/transactions", headers=headers, json=body)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"


@pytest.mark.parametrize(("change", "field"), [
    ({"amount": "12"}, "transactions.0.amount"),
    ({"amount": None}, "transactions.0.amount"),
    ({"event_timestamp": "yesterday"}, "transactions.0.event_timestamp"),
    ({"card_id": ""}, "transactions.0.card_id"),
])
def test_a_bad_stream_body_is_a_422_naming_the_field(stream_url, stream_settings, write_header, change, field):
    txn = {**_live(stream_settings, "c000128", 40), **change}
    answer = httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": [txn]})
    assert answer.status_code == 422
    assert answer.json()["field"] == field and answer.json()["code"] == "unprocessable"


def test_an_empty_or_shapeless_stream_body_is_a_422(stream_url, write_header):
    for body in ({"transactions": []}, {}, [1]):
        answer = httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json=body)
        assert answer.status_code == 422, body


def test_a_multi_worker_server_refuses_to_stream(stream_settings, write_header):
    app = create_app(stream_settings.model_copy(update={"workers": 2}))
    with running(app) as url:
        answer = httpx.post(f"{url}/stream/transactions", headers=write_header,
                            json={"transactions": [_live(stream_settings, "c000129", 50)]})
    assert answer.status_code == 409 and answer.json()["code"] == "conflict"


def test_a_line_cut_by_a_crash_is_dropped_and_the_log_stays_readable(stream_settings):
    from flywheel_features._stream import CardStream

    log = stream_settings.data_dir / "stream" / "transactions.jsonl"
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as handle:
        handle.write(b'{"transaction_id": "t99')  # a crash mid-write: that post was never answered
    first = CardStream(open_store(stream_settings), stream_settings.data_dir, 1000, 60).open()
    first.ingest([card_stream.CardTransaction("t8000000001", "c000130", T0_US + 90 * 24 * 60 * MINUTE_US, 5.0, "US")])
    again = CardStream(open_store(stream_settings), stream_settings.data_dir, 1000, 60).open()
    assert len(again.history) == len(first.history)
    assert log.read_bytes().endswith(b"\n") and b't99\n' not in log.read_bytes()


def test_live_traffic_past_midnight_brings_that_days_merchant_snapshot_online_and_offline(
        stream_url, stream_settings, read_header, write_header):
    data = stream_settings.data_dir
    last_snapshot = read_parquet(data / feature_pipeline.MERCHANT_RISK_FILE)["event_timestamp"].max()
    midnight = last_snapshot + pd.Timedelta(days=1)
    history = read_parquet(data / feature_pipeline.TRANSACTIONS_FILE)
    to_midnight = (midnight - history["event_timestamp"].max()) / pd.Timedelta(minutes=1)
    merchant = "m00150"  # no other test streams it
    before = [{**_live(stream_settings, "c000141", to_midnight - m), "merchant_id": merchant} for m in (90, 60)]
    after = _live(stream_settings, "c000141", to_midnight + 30)
    for body in (before, [after]):
        answer = httpx.post(f"{stream_url}/stream/transactions", headers=write_header, json={"transactions": body})
        assert answer.status_code == 200, answer.text
    # Offline: the day's part, for training. Online: that snapshot, as the batch rules count it (the history's
    # transactions of the merchant in the 7 days before 00:00, and these two).
    day = midnight.strftime("%Y%m%d")
    snapshot = read_parquet(data / f"merchant_risk.stream-{day}-{day}.parquet")
    assert set(feature_pipeline.to_us(snapshot["event_timestamp"])) == {int(feature_pipeline.to_us(pd.Series([midnight]))[0])}
    times = history.loc[history["merchant_id"] == merchant, "event_timestamp"]
    expected = int(((times >= midnight - pd.Timedelta(days=7)) & (times < midnight)).sum()) + len(before)
    body = httpx.post(f"{stream_url}/get-online-features", headers=read_header, json={
        "features": ["merchant_risk:merchant_txn_count_7d"], "entities": {"merchant_id": [merchant]}}).json()
    served = body["results"][body["metadata"]["feature_names"].index("merchant_txn_count_7d")]["values"][0]
    assert int(served) == expected
    assert int(snapshot.loc[snapshot["merchant_id"] == merchant, "merchant_txn_count_7d"].iloc[0]) == expected
