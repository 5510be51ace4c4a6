"""Live transactions reach the online store (the features service's stream step), so unchanged traffic
stops drifting: the real features service, transformer, predictor and drift service of scripts/localstack.py.

Before the stream step, the online card_activity rows were the last materialization's and never moved,
while the drift reference holds point-in-time values: `none` traffic drifted in every window. Run as a
script, this module measures the false-alarm rate through the real path with the stream off and on:

    tests/.venv/bin/python tests/integration/test_feature_stream.py [--windows 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flywheel_core import feature_pipeline, label_feed, schema

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from conftest import streamed  # noqa: E402
from localstack import (  # noqa: E402
    Ports,
    Stack,
    bearer,
    default_services,
    free_port,
    token,
    venv_python,
)

WINDOW_ROWS = 500
"""Drift windows of 500 rows (the service's default is 2000): 5+ windows of the small world's traffic stay
within the transformer's future-skew limit (the simulated live traffic runs ahead of the wall clock; the
small world makes about 180 transactions a simulated day) and within this test's time. The detector's
thresholds are the defaults."""
MAX_FUTURE_SKEW_S = 30 * 86_400
"""Live traffic is stamped from the history's end (today 00:00 UTC) onwards: up to 17 days ahead here."""


def run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def prepare(workdir: Path, model_repo: Path | None = None, world: tuple[str, ...] = ("--size", "small")
            ) -> tuple[Path, Path]:
    """Its own small history, applied and materialised (the stream writes into the data directory), and a
    model trained on the same history (the session's, when given: the small world is seeded and dated alike)."""
    data = workdir / "data"
    env = {"FLYWHEEL_DATA_DIR": str(data)}
    features = venv_python("services/features")
    run([features, "-m", "flywheel_core.sim", "history", "--out", str(data), *world], env)
    run([features, "-m", "flywheel_features", "apply"], env)
    run([features, "-m", "flywheel_features", "materialize"], env)
    if model_repo is None:
        model_repo = workdir / "model_repo"
        run([venv_python("services/trainer"), "-m", "flywheel_trainer", "train", "--feature-repo", "feature_repo",
             "--data", str(data), "--model-repo", str(model_repo), "--model", "fraud", "--epochs", "3"],
            {**env, "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND":
             f"{venv_python('services/drift')} -m flywheel_drift precompute --version-dir"})
    return data, model_repo


def live_file(data: Path, n: int) -> Path:
    return data.parent / f"live-{n}.jsonl"


def live(data: Path, n: int) -> list[dict]:
    out = live_file(data, n)
    run([venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", "none", "--n", str(n),
         "--out", str(out)], {"FLYWHEEL_DATA_DIR": str(data)})
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


@contextmanager
def stack(workdir: Path, data: Path, model_repo: Path, stream: bool, window_rows: int = WINDOW_ROWS
          ) -> Iterator[tuple[Stack, Ports]]:
    ports = Ports(features=free_port(), predictor=free_port(), transformer=free_port(), drift=free_port(),
                  router=free_port(), router_admin=free_port())
    extra = {"FLYWHEEL_DRIFT_WINDOW_ROWS": str(window_rows),
             "FLYWHEEL_TRANSFORMER_MAX_FUTURE_SKEW_S": str(MAX_FUTURE_SKEW_S)}
    if not stream:
        extra["FLYWHEEL_TRANSFORMER_FEATURE_STREAM_URL"] = ""
    with Stack(default_services(model_repo, data, ports, extra_env=extra), log_dir=workdir / "logs") as running:
        yield running, ports


def label_feeder(data: Path, ports: Ports, truth: Path) -> Callable[[], None]:
    """The label feed as it runs beside live traffic (flywheel_core.label_feed): each call delivers the labels
    due by the newest scored transaction, to the drift service and to the offline data. Without it, live frauds
    are never labelled and merchant_fraud_rate_30d sinks day after day in stream time: real drift of the
    test's making, not of the traffic's."""
    rows = label_feed.read_truth([truth])
    drift = label_feed.Drift(f"http://127.0.0.1:{ports.drift}", token(data, "drift-labels"))
    return lambda: label_feed.feed_once(data, rows, drift) and None


def send(ports: Ports, transactions: list[dict], stream: bool, batch: int = 50,
         debug: dict[str, str] | None = None, labels: Callable[[], None] | None = None
         ) -> dict[str, dict[str, float]]:
    """Score every transaction through the transformer, in time order, in batches that hold each card at most
    once; with the stream on, each batch's rows are pushed before the next batch is scored (as with real
    traffic, where a card's next transaction comes well after the push), and `labels` (a `label_feeder`) then
    delivers what is due. With `debug` (the transformer debug token's header) returns each transaction's model
    input as served, by transaction id."""
    served: dict[str, dict[str, float]] = {}
    headers = {**debug, "x-flywheel-debug-features": "1"} if debug else {}
    url = f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict"
    sent = streamed(ports) if stream else 0.0
    with httpx.Client(timeout=30) as client:
        i = 0
        while i < len(transactions):
            cards: set[str] = set()
            chunk = []
            while i < len(transactions) and len(chunk) < batch and transactions[i]["card_id"] not in cards:
                cards.add(transactions[i]["card_id"])
                chunk.append({k: transactions[i][k] for k in schema.RAW_TRANSACTION_FIELDS})
                i += 1
            answer = client.post(url, json={"instances": chunk}, headers=headers)
            assert answer.status_code == 200, answer.text
            served.update({p["id"]: p["features"] for p in answer.json()["predictions"] if "features" in p})
            sent += len(chunk)
            deadline = time.monotonic() + 10
            while stream and streamed(ports) < sent:
                assert time.monotonic() < deadline, "the stream step did not take the batch within 10 s"
                time.sleep(0.005)
            if labels is not None:
                labels()
    return served


def report(ports: Ports, windows: int, timeout_s: float = 120) -> dict:
    """The drift report once `windows` windows have closed (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = httpx.get(f"http://127.0.0.1:{ports.drift}/v1/report", timeout=30).json()
        version = body["versions"][0] if body["versions"] else {}
        if version.get("windows", 0) >= windows:
            return version
        assert time.monotonic() < deadline, f"only {version.get('windows', 0)} windows closed: {version}"
        time.sleep(0.5)


def summary(version: dict) -> dict:
    drifted = [h for h in version["history"] if h["drift"]]
    features: dict[str, int] = {}
    for window in version["history"]:
        for name, p in window["p_values"].items():
            if p is not None and window["drift"] and p < 0.05:
                features[name] = features.get(name, 0) + 1
    return {"windows": version["windows"], "drifted_windows": len(drifted),
            "alerts": [(a.get("category"), a.get("detector")) for a in version["alerts"]],
            "features_p_below_0.05_in_drifted_windows": features}


# ---- tests -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[tuple[Stack, Ports, Path]]:
    workdir = tmp_path_factory.mktemp("stream-stack")
    data, repo = prepare(workdir, model_repo)
    with stack(workdir, data, repo, stream=True) as (running, ports):
        yield running, ports, data


def test_a_transaction_scored_by_the_transformer_changes_its_cards_served_txn_count_once_streamed(streaming):
    _, ports, data = streaming
    history = feature_pipeline.read_parquet(data / feature_pipeline.TRANSACTIONS_FILE)
    card = history["card_id"].iloc[-1]
    at = history["event_timestamp"].max() + pd.Timedelta(minutes=1)
    txn = {"transaction_id": "t9000000001", "card_id": card, "merchant_id": history["merchant_id"].iloc[-1],
           "amount": 25.0, "currency": "USD", "country": "US", "merchant_category": "grocery", "channel": "pos",
           "event_timestamp": at.isoformat()}
    expected = feature_pipeline.card_activity(pd.concat([history, pd.DataFrame([{**txn, "event_timestamp": at}])],
                                                        ignore_index=True))
    expected = int(expected[expected["card_id"] == card].iloc[-1]["txn_count_1h"])
    lookup = {"features": ["card_activity:txn_count_1h"], "entities": {"card_id": [card]}}
    read = bearer(token(data, "features-read"))

    def served() -> int:
        body = httpx.post(f"http://127.0.0.1:{ports.features}/get-online-features", json=lookup, headers=read).json()
        names = body["metadata"]["feature_names"]
        return int(body["results"][names.index("txn_count_1h")]["values"][0])

    before, sent = served(), streamed(ports)
    answer = httpx.post(f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict",
                        json={"instances": [txn]}, timeout=10)
    assert answer.status_code == 200, answer.text
    # The stream step counts a transaction once it has pushed its card's row to the online store, so from then on
    # the very next lookup must see it: no time window is asserted here (how soon after the prediction that is,
    # is a latency, not a test's business), only that nothing lags behind the push.
    deadline = time.monotonic() + 30  # a bound for a stuck stack, not the assertion
    while streamed(ports) < sent + 1:
        assert time.monotonic() < deadline, "the stream step never took the transaction"
        time.sleep(0.005)
    assert served() == expected and expected == before + 1


CARD_FEATURES = ("txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d", "distinct_countries_24h")


@pytest.fixture(scope="module")
def scored(streaming) -> tuple[list[dict], dict[str, dict[str, float]], dict]:
    """Six windows of `none` traffic through the transformer, with each one's model input as served, and the
    drift service's report once the six windows have closed."""
    _, ports, data = streaming
    windows = 6
    transactions = live(data, windows * WINDOW_ROWS + 20)
    served = send(ports, transactions, stream=True, debug=bearer(token(data, "transformer-debug")),
                  labels=label_feeder(data, ports, live_file(data, windows * WINDOW_ROWS + 20)))
    return transactions, served, report(ports, windows)


def test_live_transactions_are_served_the_card_state_training_joins(streaming, scored):
    """The point-in-time join of training (the row of the card's previous transaction) is what is served."""
    _, _, data = streaming
    transactions, served, _ = scored
    columns = ["transaction_id", "card_id", "event_timestamp", "amount", "country"]
    history = feature_pipeline.read_parquet(data / feature_pipeline.TRANSACTIONS_FILE, columns=columns)
    # Everything the stream step was sent (these and the other tests' transactions), from its log.
    logged = pd.read_json(data / "stream" / "transactions.jsonl", lines=True, dtype={"transaction_id": str})
    logged["event_timestamp"] = feature_pipeline.from_us(logged["event_us"].to_numpy())
    sent = pd.DataFrame(transactions)
    assert set(sent["transaction_id"]) <= set(logged["transaction_id"])
    everything = pd.concat([history, logged[columns]], ignore_index=True)
    everything["_t"] = feature_pipeline.to_us(everything["event_timestamp"])
    everything = everything.sort_values(["card_id", "_t", "transaction_id"], kind="mergesort").reset_index(drop=True)
    rows = feature_pipeline.card_activity(everything)
    rows["_t"] = feature_pipeline.to_us(rows["event_timestamp"])
    rows = rows.sort_values(["card_id", "_t"], kind="mergesort").reset_index(drop=True)
    rows["transaction_id"] = everything["transaction_id"]  # same (card, time, id) order, row for row
    previous = rows.groupby("card_id")[list(CARD_FEATURES) + ["_t"]].shift(1)
    # A card whose previous transaction is over the view's ttl old is served the model's defaults (the online
    # row is too old to use): not a value to compare.
    stale = rows["_t"] - previous["_t"] > schema.FEATURE_VIEW_TTL_S["card_activity"] * 1_000_000
    previous.loc[stale, list(CARD_FEATURES)] = float("nan")
    truth = pd.concat([rows[["transaction_id", "_t"]], previous.add_suffix("_asof")], axis=1)
    truth = truth.set_index("transaction_id").loc[sent["transaction_id"]]
    known = truth.dropna()
    assert len(known) > 0.9 * len(truth)
    mismatched = [
        (tid, name, served[tid][name], row[f"{name}_asof"])
        for tid, row in known.iterrows() for name in CARD_FEATURES
        if not abs(served[tid][name] - row[f"{name}_asof"]) <= 1e-5 * max(1.0, abs(row[f"{name}_asof"]))
    ]
    assert not mismatched, f"{len(mismatched)} served values differ from the point-in-time join: {mismatched[:5]}"


def test_unchanged_traffic_through_the_real_path_raises_no_drift_alert_over_6_windows(scored):
    """The issue's goal: six windows of `none` traffic (stream step and label feed on) page no one."""
    _, _, version = scored
    result = summary(version)
    assert result["windows"] >= 6, result
    assert version["alerts"] == [], result
    # How many windows drift on the way (2 of 6 here, where alpha would give about 0.3) is measured, not
    # asserted: docs/benchmarks.md, "False alarms through the real path".


# ---- the measurement ---------------------------------------------------------------------------------------


def measure(windows: int, window_rows: int, like: Path | None, model_repo: Path | None) -> dict:
    """The drift service's verdicts on the same `none` traffic, with the stream step off, then on (each run on
    a fresh store of the same history). `like`: a data directory whose history (simulation.json) to
    regenerate, with `model_repo` trained on it (read only); default the small world, trained here."""
    world: tuple[str, ...] = ("--size", "small")
    if like is not None:
        recorded = json.loads((like / "simulation.json").read_text())
        world = ("--size", recorded["size"], "--seed", str(recorded["seed"]), "--start", recorded["start"])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = model_repo
        for stream in (False, True):
            workdir = Path(tmp) / f"stream-{'on' if stream else 'off'}"
            data, repo = prepare(workdir, repo, world)
            transactions = live(data, windows * window_rows + 20)
            started = time.monotonic()
            with stack(workdir, data, repo, stream, window_rows) as (_, ports):
                feeder = label_feeder(data, ports, live_file(data, windows * window_rows + 20)) if stream else None
                send(ports, transactions, stream, labels=feeder)
                out["on" if stream else "off"] = {**summary(report(ports, windows, timeout_s=300)),
                                                  "seconds": round(time.monotonic() - started, 1)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window-rows", type=int, default=WINDOW_ROWS)
    parser.add_argument("--like", type=Path, default=None, help="regenerate this data directory's history")
    parser.add_argument("--model-repo", type=Path, default=None, help="a model trained on that history")
    a = parser.parse_args()
    print(json.dumps(measure(a.windows, a.window_rows, a.like, a.model_repo), indent=2))
