"""The commands as a user runs them, in subprocesses: their output, their exit, what they leave behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from flywheel_core import schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_features._metrics_dir import PREFIX, remove_orphans

from conftest import free_port


def _env(settings, tmp: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PROMETHEUS_")}
    return {**env, "TMPDIR": str(tmp), "FLYWHEEL_FEATURES_REPO_PATH": str(settings.repo_path),
            "FLYWHEEL_DATA_DIR": str(settings.data_dir), **extra}


def test_historical_prints_one_line_and_leaves_nothing_behind(store, settings, transactions, tmp_path):
    sample = transactions.head(20)
    pd.DataFrame({
        "card_id": sample["card_id"], "merchant_id": sample["merchant_id"],
        "event_timestamp": schema.as_of(sample["event_timestamp"]), "amount": sample["amount"],
        "event_hour": sample["event_timestamp"].dt.hour.astype("int64"),
    }).to_parquet(tmp_path / "entities.parquet")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = subprocess.run(
        [sys.executable, "-W", "default", "-m", "flywheel_features", "historical",
         "--entities", str(tmp_path / "entities.parquet"), "--out", str(tmp_path / "out.parquet")],
        env=_env(settings, tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout
    # Nothing but its result: no `nanobind: leaked ...` from DuckDB at exit (as the trainer printed), no warnings;
    # and no Feast metrics directory left in $TMPDIR.
    out = tmp_path / "out.parquet"
    assert run.stdout == f"wrote 20 rows x {read_parquet(out).shape[1]} columns to {out}\n"
    assert list(tmp.iterdir()) == []


def test_the_server_removes_its_metrics_directory_when_stopped(store, settings, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flywheel_features", "serve"],
        env=_env(settings, tmp_path, FLYWHEEL_FEATURES_HOST="127.0.0.1", FLYWHEEL_FEATURES_PORT=str(port),
                 FLYWHEEL_FEATURES_LOG_LEVEL="warning"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        assert [p.name for p in tmp_path.iterdir()] == [f"{PREFIX}{server.pid}"]
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 128 + signal.SIGTERM
    assert output == ""
    assert list(tmp_path.iterdir()) == []


def test_the_served_process_takes_its_tokens_from_the_environment(store, settings, read_header, tmp_path):
    port = free_port()
    env = _env(settings, tmp_path, FLYWHEEL_FEATURES_HOST="127.0.0.1", FLYWHEEL_FEATURES_PORT=str(port),
               FLYWHEEL_FEATURES_LOG_LEVEL="warning",
               FLYWHEEL_FEATURES_READ_TOKEN_FILE=str(settings.read_token_file),
               FLYWHEEL_FEATURES_WRITE_TOKEN_FILE=str(settings.write_token_file))
    server = subprocess.Popen([sys.executable, "-m", "flywheel_features", "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lookup = {"features": ["card_activity:txn_count_24h"], "entities": {"card_id": ["c000001"]}}
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/get-online-features", json=lookup).status_code == 401
            assert client.post("/get-online-features", headers=read_header, json=lookup).status_code == 200
            assert client.post("/push", headers=read_header, json={}).status_code == 401
            assert client.get("/docs", headers=read_header).status_code == 404
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    finally:
        server.kill()


def test_directories_of_exited_processes_are_removed_and_live_ones_kept(tmp_path):
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"{PREFIX}{exited.stdout.strip()}", tmp_path / f"{PREFIX}{os.getpid()}"
    for path in (dead, alive):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"")
    assert remove_orphans(tmp_path) == [dead]
    assert [p.name for p in tmp_path.iterdir()] == [alive.name]
