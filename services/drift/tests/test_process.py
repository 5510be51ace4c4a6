"""`python -m flywheel_drift` as a real process on loopback: ready fast, accepts, survives a restart."""

import os
import signal
import subprocess
import sys
import time

import httpx

from flywheel_contracts.auth import TokenFile, write_token
from flywheel_contracts.ports import free_port

from test_events import kserve, transformer_request, transformer_response


def start(tmp_path, port, **extra: str):
    env = {**os.environ, **extra, "FLYWHEEL_DRIFT_HTTP_HOST": "127.0.0.1", "FLYWHEEL_DRIFT_HTTP_PORT": str(port),
           "FLYWHEEL_DRIFT_MODEL_REPO": str(tmp_path / "repo"), "FLYWHEEL_DRIFT_SPOOL_DIR": str(tmp_path / "spool"),
           "FLYWHEEL_DRIFT_MMD_ENABLED": "false",
           "FLYWHEEL_DRIFT_INGEST_TOKEN_FILE": str(write_token(tmp_path / "tokens" / "drift-ingest")),
           "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE": str(write_token(tmp_path / "tokens" / "drift-labels")),
           "FLYWHEEL_DRIFT_SKEW_TOKEN_FILE": str(write_token(tmp_path / "tokens" / "drift-skew"))}
    started = time.monotonic()
    log = open(tmp_path / f"drift-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "flywheel_drift"], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() - started < 60:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url, time.monotonic() - started
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the drift process exited; see its log under tmp_path"
        time.sleep(0.1)
    process.kill()
    raise AssertionError("not ready within 60 s")


def test_the_process_keeps_what_it_accepted_across_a_restart(tmp_path, repo):
    port = free_port()
    process, url, _ = start(tmp_path, port)
    try:
        writer = TokenFile(tmp_path / "tokens" / "drift-ingest").header()
        labeller = TokenFile(tmp_path / "tokens" / "drift-labels").header()
        for headers in ({}, labeller):  # anyone, or the labels token's holder, cannot write rows
            r = httpx.post(url, headers={**kserve("request"), **headers}, content=transformer_request(2))
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        for role, body in (("request", transformer_request(2)), ("response", transformer_response(2))):
            assert httpx.post(url, headers={**kserve(role), **writer}, content=body).status_code == 202
        assert httpx.post(url, headers={"content-type": "application/json", **writer}, content=b"{}").status_code == 400
        labels = {"labels": [{"id": "t0", "label": 1}]}
        assert httpx.post(f"{url}/v1/labels", json=labels, headers=writer).status_code == 401
        assert httpx.post(f"{url}/v1/labels", json=labels, headers=labeller).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (the service writes its checkpoint), then re-raises the signal.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    process, url, _ = start(tmp_path, port)
    try:
        metrics = httpx.get(f"{url}/metrics").text
        assert 'flywheel_drift_ready 1.0' in metrics
        report = httpx.get(f"{url}/v1/report").json()
        assert report["versions"][0]["rows"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_bad_setting_exits_2_naming_it(tmp_path):
    env = {**os.environ, "FLYWHEEL_DRIFT_WINDOW_ROWS": "lots"}
    done = subprocess.run([sys.executable, "-m", "flywheel_drift"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FLYWHEEL_DRIFT_WINDOW_ROWS' has value 'lots'" in done.stderr
