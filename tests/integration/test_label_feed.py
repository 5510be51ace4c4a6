"""Delayed labels reach the drift service and the trainer's data: the label feed on the real stack.

Transactions scored through the transformer are logged by the features service's stream step; the feed
(`python -m flywheel_core.label_feed`) posts the labels that have come due by the newest scored event to the
real drift service and appends those transactions, labelled, to the offline data, where the trainer reads them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd

from flywheel_core import feature_pipeline, label_feed, schema

from conftest import ROOT, newest_known, run, streamed
from localstack import token, venv_python


def _feed(ports, data_dir: Path, truth: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_python("services/features"), "-m", "flywheel_core.label_feed", "--once", "--data", str(data_dir),
         "--truth", str(truth), "--drift-url", f"http://127.0.0.1:{ports.drift}",
         "--token-file", str(token(data_dir, "drift-labels"))],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def test_labels_that_came_due_reach_the_drift_service_and_the_trainers_data_once(stack, ports, data_env, workdir):
    data_dir = Path(data_env["FLYWHEEL_DATA_DIR"])
    start = newest_known(data_dir) + pd.Timedelta(minutes=1)
    truth_path = workdir / "label-feed-truth.jsonl"
    run([venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", "prior", "--n", "40",
         "--traffic-seed", "11", "--start", start.isoformat(), "--out", str(truth_path)], data_env)
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]
    # Then one transaction eight simulated days later: the clock that makes every label of the 40 due.
    clock = {**truth[0], "transaction_id": "t0000000000clock",
             "event_timestamp": (start + pd.Timedelta(days=8)).isoformat().replace("+00:00", "Z")}
    before = streamed(ports)
    for batch in (truth, [clock]):
        answer = httpx.post(f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", timeout=30,
                            json={"instances": [{k: t[k] for k in schema.RAW_TRANSACTION_FIELDS} for t in batch]})
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30  # a bound for a stuck stack, not the assertion
    while streamed(ports) < before + len(truth) + 1:
        assert time.monotonic() < deadline, "the stream step never logged the scored transactions"
        time.sleep(0.05)

    parts_before = set(data_dir.glob(label_feed.LIVE_PART_GLOB))
    done = _feed(ports, data_dir, truth_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (part,) = set(data_dir.glob(label_feed.LIVE_PART_GLOB)) - parts_before
    written = feature_pipeline.read_parquet(part)
    expected = {t["transaction_id"]: t["is_fraud"] for t in truth}
    assert dict(zip(written["transaction_id"], written["is_fraud"], strict=True)) == expected  # not the clock
    assert "delivered 40 labels" in done.stderr, done.stderr

    again = _feed(ports, data_dir, truth_path)
    assert again.returncode == 0 and set(data_dir.glob(label_feed.LIVE_PART_GLOB)) - parts_before == {part}

    # The trainer reads them with the history.
    read = subprocess.run(
        [venv_python("services/trainer"), "-c",
         "import sys; from flywheel_trainer._dataset import read_transactions; "
         "f = read_transactions(sys.argv[1]); print(int(f['transaction_id'].isin(sys.argv[2:]).sum()))",
         str(data_dir), *expected],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert read.returncode == 0 and read.stdout.strip() == "40", read.stdout + read.stderr
