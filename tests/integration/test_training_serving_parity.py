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


def fresh_sample(live: list[dict], data_dir: Path, n: int = 20) -> list[dict]:
    """n live transactions of distinct cards, moved (spacing kept) to just after the newest transaction the
    history and the stream step hold, under new ids."""
    newest = newest_known(data_dir)
    picked, cards = [], set()
    for t in live:
        if t["card_id"] not in cards:
            cards.add(t["card_id"])
            picked.append(t)
    picked = picked[:n]
    start = min(pd.Timestamp(t["event_timestamp"]) for t in picked)
    shift = newest - start + timedelta(minutes=1)
    return [{**t, "transaction_id": f"parity-{t['transaction_id']}",
             "event_timestamp": (pd.Timestamp(t["event_timestamp"]) + shift).isoformat()} for t in picked]


def test_served_model_input_equals_point_in_time_training_input(stack, ports, live_transactions, model_repo, data_env, workdir):
    data_dir = Path(data_env["FLYWHEEL_DATA_DIR"])
    _quiet_stream(ports)
    logged = len(_stream_log(data_dir))
    sample = fresh_sample(live_transactions, data_dir)
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
    historical = pd.read_parquet(out_path).set_index("transaction_id").loc[[t["transaction_id"] for t in sample]]
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
