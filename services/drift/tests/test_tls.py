"""`python -m flywheel_drift` with FLYWHEEL_TLS_*: HTTPS to a caller holding the CA, nothing to anyone else;
half a configuration exits 2 naming the variable. A real process, a real test CA (trustme)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme

from flywheel_contracts.tls import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV

from test_process import free_port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_env(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "flywheel-drift")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {CERT_FILE_ENV: str(tmp_path / "tls.crt"), KEY_FILE_ENV: str(tmp_path / "tls.key"),
            CA_FILE_ENV: str(tmp_path / "ca.crt")}


def _env(tmp_path: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra, "FLYWHEEL_DRIFT_HTTP_HOST": "127.0.0.1", "FLYWHEEL_DRIFT_HTTP_PORT": str(port),
            "FLYWHEEL_DRIFT_MODEL_REPO": str(tmp_path / "repo"), "FLYWHEEL_DRIFT_SPOOL_DIR": str(tmp_path / "spool"),
            "FLYWHEEL_DRIFT_MMD_ENABLED": "false"}


def test_the_process_answers_https_to_a_caller_holding_the_ca_only(tmp_path, repo, tls_env):
    port = free_port()
    log = open(tmp_path / "drift.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "flywheel_drift"], env=_env(tmp_path, port, tls_env),
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    verify = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "drift.log").read_text()
            assert time.monotonic() < deadline, "not ready over HTTPS within 60 s"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/report", verify=verify).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/health", timeout=5)  # the system's trust store does not know the test CA
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)  # plain HTTP on the HTTPS port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_certificate_without_its_key_exits_2_naming_the_variable(tmp_path, tls_env):
    only_cert = {CERT_FILE_ENV: tls_env[CERT_FILE_ENV]}
    done = subprocess.run([sys.executable, "-m", "flywheel_drift"], env=_env(tmp_path, free_port(), only_cert),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"'{CERT_FILE_ENV}' is set but '{KEY_FILE_ENV}' is not" in done.stderr
    assert "Traceback" not in done.stderr
