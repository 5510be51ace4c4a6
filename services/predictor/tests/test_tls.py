"""`python -m flywheel_predictor` with FLYWHEEL_TLS_*: HTTPS (fast path and KServe's routes alike, one worker or
several) to a caller holding the CA, nothing to anyone else; with CLIENT_AUTH, only to a caller presenting a
certificate the CA signed; half a configuration exits 2 naming the variable. Real processes, a test CA (trustme)."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import numpy as np
import pytest
import trustme

from flywheel_contracts.tls import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    CLIENT_AUTH_ENV,
    KEY_FILE_ENV,
)

from conftest import START_TIMEOUT_S, free_port, run_to_exit, server_env
from tiny_model import DIM, reference


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_env(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    where = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "flywheel-predictor")
    cert.private_key_and_cert_chain_pem.write_to_path(str(where / "tls.crt"))
    cert.private_key_pem.write_to_path(str(where / "tls.key"))
    ca.cert_pem.write_to_path(str(where / "ca.crt"))
    return {CERT_FILE_ENV: str(where / "tls.crt"), KEY_FILE_ENV: str(where / "tls.key"), CA_FILE_ENV: str(where / "ca.crt")}


def _https(repo: Path, log: Path, extra: Mapping[str, str], verify: ssl.SSLContext) -> Iterator[str]:
    port = free_port()
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "flywheel_predictor"], env=server_env(repo, port, extra),
                                   stdout=sink, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"not ready over HTTPS:\n{log.read_text(errors='replace')}"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _predict(url: str, verify: ssl.SSLContext) -> None:
    rows = np.random.default_rng(5).normal(size=(1, DIM)).astype(np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, DIM], "datatype": "FP32", "data": rows[0].tolist()}]}
    answer = httpx.post(f"{url}/v2/models/fraud/infer", json=body, verify=verify, timeout=10)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["outputs"][0]["data"], reference(rows).ravel(), rtol=1e-5)
    v1 = httpx.post(f"{url}/v1/models/fraud:predict", json={"instances": rows.tolist()}, verify=verify, timeout=10)
    assert v1.status_code == 200, v1.text


def test_one_worker_answers_https_to_a_caller_holding_the_ca_only(repo, tls_env, tmp_path) -> None:
    verify = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])
    for url in _https(repo, tmp_path / "predictor.log", tls_env, verify):
        _predict(url, verify)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/v2/health/live", timeout=5)  # the system's trust store does not know the test CA
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/v2/health/live", timeout=5)


def test_two_workers_with_client_auth_answer_only_a_caller_with_a_signed_certificate(repo, tls_env, ca, tmp_path) -> None:
    caller = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])
    ca.issue_cert("flywheel-transformer").configure_cert(caller)
    for url in _https(repo, tmp_path / "predictor.log", {**tls_env, CLIENT_AUTH_ENV: "true",
                                                         "FLYWHEEL_PREDICTOR_WORKERS": "2"}, caller):
        _predict(url, caller)
        anonymous = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])  # trusts the server, presents nothing
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/v2/health/live", verify=anonymous, timeout=5)


def test_a_key_without_its_certificate_exits_2_naming_the_variable(repo, tls_env) -> None:
    result = run_to_exit(repo, {KEY_FILE_ENV: tls_env[KEY_FILE_ENV]})
    assert result.returncode == 2
    assert f"'{KEY_FILE_ENV}' is set but '{CERT_FILE_ENV}' is not" in result.stderr
    assert "Traceback" not in result.stderr
