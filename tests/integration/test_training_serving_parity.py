"""Training-serving parity: what the transformer sent the model equals what training would have built.

For sampled live transactions, the model input the transformer served (online features, on-demand
features, hashing, defaults) must equal the model input built from Feast's point-in-time
`get_historical_features` at the same instant, the way the trainer builds it.

The online store serves each card's current state, which the point-in-time join gives only to a transaction
newer than everything the card has seen. Other tests have streamed live traffic through this stack (the
rollout test, days of it), so the sample is the session's live transactions moved past everything the stream
step holds, under new ids, one per card, and the stream's rows are in the offline store (the stack writes
its parts after STREAM_FLUSH_S) before training's join is asked.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from flywheel_core import model_repo as repo
from flywheel_core import schema
from flywheel_core.feature_pipeline import read_parquet

from conftest import newest_known, run, streamed
from localstack import bearer, token, venv_python

STREAM_PART = re.compile(r"^card_activity\.stream-\d{10}-(\d{10})\.parquet$")


def _quiet_stream(ports) -> None:
    """Until the stream step has taken what the transformer still had queued (bounded)."""
    deadline = time.monotonic() + 60
    before = streamed(ports)
    while True:
        time.sleep(1.0)
        now = streamed(ports)
        if now == before:
            return
        assert time.monotonic() < deadline, "the stream step never went quiet"
        before = now


def _stream_log(data_dir: Path) -> list[dict]:
    log = data_dir / "stream" / "transactions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _offline_lines(data_dir: Path) -> int:
    """Log lines whose rows are in the offline store (the parts are named by the log lines they cover)."""
    return max((int(m.group(1)) for p in data_dir.glob("card_activity.stream-*.parquet")
                if (m := STREAM_PART.match(p.name))), default=0)


def _newest_snapshot(data_dir: Path) -> pd.Timestamp:
    """The newest merchant_risk snapshot, the batch history's (at its end, a 00:00 after its last transaction)
    or the stream step's: the online store serves it to any transaction, so the sample must come after it."""
    stamps = [read_parquet(p, columns=["event_timestamp"])["event_timestamp"].max()
              for p in data_dir.glob("merchant_risk*.parquet")]
    newest = pd.Timestamp(max(stamps))
    return newest.tz_localize("UTC") if newest.tzinfo is None else newest


def fresh_sample(live: list[dict], data_dir: Path, n: int = 20) -> list[dict]:
    """n live transactions of distinct cards, a second apart from a minute after the newest transaction and the
    newest merchant snapshot the history and the stream step hold, under new ids."""
    start = max(newest_known(data_dir), _newest_snapshot(data_dir)) + timedelta(minutes=1)
    picked, cards = [], set()
    for t in live:
        if t["card_id"] not in cards:
            cards.add(t["card_id"])
            picked.append(t)
    return [{**t, "transaction_id": f"parity-{t['transaction_id']}",
             "event_timestamp": (start + timedelta(seconds=k)).isoformat()} for k, t in enumerate(picked[:n])]


def _on_a_snapshotted_day(sample: list[dict], live: list[dict], data_dir: Path, ports) -> list[dict]:
    """The sample, moved past the next 00:00 first if it would reach it. merchant_risk's daily snapshot of a day
    is made by the day's first streamed transaction, after that transaction was scored: a request whose rows
    open a day is served the day before's snapshot, where training joins the new one (the documented lag of
    _merchant_stream). So one transaction opens the day through the transformer first, as live traffic would."""
    last = pd.Timestamp(sample[-1]["event_timestamp"])
    if last.normalize() <= _newest_snapshot(data_dir):
        return sample
    opener = {**{k: live[-1][k] for k in schema.RAW_TRANSACTION_FIELDS}, "transaction_id": "parity-opens-the-day",
              "event_timestamp": (last.normalize() + timedelta(seconds=1)).isoformat()}
    before = streamed(ports)
    response = httpx.post(f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict",
                          json={"instances": [opener]}, timeout=10)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30  # a bound for a stuck stack, not the assertion
    while streamed(ports) <= before:
        assert time.monotonic() < deadline, "the stream step never took the transaction that opens the day"
        time.sleep(0.05)
    return fresh_sample(live, data_dir, len(sample))


def test_served_model_input_equals_point_in_time_training_input(stack, ports, live_transactions, model_repo, data_env, workdir):
    data_dir = Path(data_env["FLYWHEEL_DATA_DIR"])
    _quiet_stream(ports)
    logged = len(_stream_log(data_dir))
    sample = _on_a_snapshotted_day(fresh_sample(live_transactions, data_dir), live_transactions, data_dir, ports)
    assert len(sample) >= 10, "too few distinct cards in the live sample"
    response = httpx.post(
        f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict",
        json={"instances": [{k: t[k] for k in schema.RAW_TRANSACTION_FIELDS} for t in sample]},
        headers={"x-flywheel-debug-features": "1", **bearer(token(data_env["FLYWHEEL_DATA_DIR"], "transformer-debug"))},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    served = pd.DataFrame([p["features"] for p in response.json()["predictions"]])
    # The post that streams the sample finds rows older than STREAM_FLUSH_S unwritten, and writes them.
    deadline = time.monotonic() + 60  # a bound for a stuck stack, not the assertion
    while _offline_lines(data_dir) < logged:
        assert time.monotonic() < deadline, f"stream rows never reached the offline store ({logged} logged)"
        time.sleep(0.1)

    timestamps = pd.to_datetime(pd.Series([t["event_timestamp"] for t in sample]), utc=True)
    entities = pd.DataFrame({
        "card_id": [t["card_id"] for t in sample],
        "merchant_id": [t["merchant_id"] for t in sample],
        "event_timestamp": schema.as_of(timestamps),
        "amount": [float(t["amount"]) for t in sample],
        "event_hour": timestamps.dt.hour.astype("int64"),
        "transaction_id": [t["transaction_id"] for t in sample],
    })
    entities_path, out_path = workdir / "parity_entities.parquet", workdir / "parity_features.parquet"
    entities.to_parquet(entities_path)
    run([venv_python("services/features"), "-m", "flywheel_features", "historical", "--entities", str(entities_path),
         "--out", str(out_path)], data_env)
    historical = read_parquet(out_path).set_index("transaction_id").loc[[t["transaction_id"] for t in sample]]
    raw = pd.DataFrame(sample).set_index("transaction_id")
    for column in schema.HASHED_COLUMNS:
        historical[column] = raw[column]

    # Missing features take the training defaults of the version that answered (other tests publish versions
    # trained on other splits, whose medians differ).
    (served_version,) = {p["model_version"] for p in response.json()["predictions"]}
    defaults = repo.load_version(repo.resolve(model_repo, "fraud", served_version)).metadata["defaults"]
    expected = schema.vectorize_frame(historical.reset_index(drop=True), defaults)
    actual = served[[c["name"] for c in schema.COLUMNS]].to_numpy(dtype=np.float32)
    mismatches = np.argwhere(~np.isclose(actual, expected, rtol=1e-6, atol=1e-6))
    assert len(mismatches) == 0, [
        (sample[i]["transaction_id"], schema.COLUMNS[j]["name"], float(actual[i, j]), float(expected[i, j]))
        for i, j in mismatches[:10]
    ]
