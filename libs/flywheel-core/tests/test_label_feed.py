"""Delayed labels of scored transactions: which are due, and the live parts the trainer reads."""

import json

import pandas as pd
import pytest

from flywheel_core import label_feed, sim
from flywheel_core._sim_cli import main as sim_main
from flywheel_core.feature_pipeline import read_parquet, to_us


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    config = sim.preset("small", start="2026-11-01")
    live = sim.generate_live(config, "prior", 300)  # a fraud wave: some labels arrive within days
    return live


def _log(data_dir, rows: pd.DataFrame) -> None:
    (data_dir / "stream").mkdir(parents=True, exist_ok=True)
    with (data_dir / label_feed.STREAM_LOG).open("a") as handle:
        for tid, t in zip(rows["transaction_id"], to_us(rows["event_timestamp"]), strict=True):
            handle.write(json.dumps({"transaction_id": tid, "card_id": "c", "event_us": int(t), "amount": 1.0,
                                     "country": "US"}) + "\n")


def test_a_label_is_due_once_scored_and_known_by_the_newest_scored_event(truth: pd.DataFrame, tmp_path):
    scored_rows = truth.iloc[:200]
    _log(tmp_path, scored_rows)
    scored_at = label_feed.scored(tmp_path)
    now = max(scored_at.values())
    rows = label_feed.due(truth, scored_at, set())
    assert set(rows["transaction_id"]) <= set(scored_rows["transaction_id"])  # never an unscored one
    assert (to_us(rows["label_timestamp"]) <= now).all()
    expected = scored_rows[to_us(scored_rows["label_timestamp"]) <= now]
    assert set(rows["transaction_id"]) == set(expected["transaction_id"]) and len(rows) > 0
    assert rows["is_fraud"].sum() > 0  # frauds are labelled within days, legitimate ones after 7
    assert list(to_us(rows["label_timestamp"])) == sorted(to_us(rows["label_timestamp"]))


def test_a_delivered_transaction_is_in_a_live_part_and_never_due_again(truth: pd.DataFrame, tmp_path):
    _log(tmp_path, truth)
    first = label_feed.due(truth, label_feed.scored(tmp_path), label_feed.delivered(tmp_path))
    part = label_feed.write_part(tmp_path, first)
    assert part.name == "transactions.live-000001.parquet"
    written = read_parquet(part)
    assert list(written.columns) == list(sim.TRANSACTION_COLUMNS) and len(written) == len(first)
    assert label_feed.due(truth, label_feed.scored(tmp_path), label_feed.delivered(tmp_path)).empty
    assert label_feed.write_part(tmp_path, first.iloc[:1]).name == "transactions.live-000002.parquet"


def test_nothing_is_due_before_anything_was_scored(truth: pd.DataFrame, tmp_path):
    assert label_feed.scored(tmp_path) == {}
    assert label_feed.due(truth, {}, set()).empty


def test_a_log_line_still_being_written_is_left_for_the_next_run(truth: pd.DataFrame, tmp_path):
    _log(tmp_path, truth.iloc[:2])
    with (tmp_path / label_feed.STREAM_LOG).open("a") as handle:
        handle.write('{"transaction_id": "t1", "ev')
    assert len(label_feed.scored(tmp_path)) == 2


def test_truth_read_from_the_simulators_json_lines_keeps_its_types(tmp_path):
    path = tmp_path / "live.jsonl"
    (tmp_path / "data").mkdir()
    assert sim_main(["live", "--n", "20", "--out", str(path), "--data", str(tmp_path / "data"), "--size", "small"]) == 0
    truth = label_feed.read_truth([path])
    assert list(truth.columns) == list(sim.TRANSACTION_COLUMNS) and len(truth) == 20
    assert str(truth["event_timestamp"].dt.tz) == "UTC" and truth["is_fraud"].dtype == "int64"
