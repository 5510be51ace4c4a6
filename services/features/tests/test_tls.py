"""`python -m flywheel_features serve` with FLYWHEEL_TLS_*: HTTPS (one worker or several) to a caller holding the
CA, nothing to anyone else; half a configuration exits 2 naming the variable. Real processes, a test CA (trustme)."""

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

from conftest import free_port
from test_process import _env


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca, where = trustme.CA(), tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "flywheel-features")
    cert.private_key_and_cert_chain_pem.write_to_path(str(where / "tls.crt"))
    cert.private_key_pem.write_to_path(str(where / "tls.key"))
    ca.cert_pem.write_to_path(str(where / "ca.crt"))
    return {CERT_FILE_ENV: str(where / "tls.crt"), KEY_FILE_ENV: str(where / "tls.key"), CA_FILE_ENV: str(where / "ca.crt")}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_server_answers_https_to_a_caller_holding_the_ca_only(store, settings, read_header, tls_env, tmp_path,
                                                                  workers):
    port = free_port()
    env = _env(settings, tmp_path, FLYWHEEL_FEATURES_HOST="127.0.0.1", FLYWHEEL_FEATURES_PORT=str(port),
               FLYWHEEL_FEATURES_LOG_LEVEL="warning", FLYWHEEL_FEATURES_WORKERS=workers,
               FLYWHEEL_FEATURES_READ_TOKEN_FILE=str(settings.read_token_file),
               FLYWHEEL_FEATURES_WRITE_TOKEN_FILE=str(settings.write_token_file), **tls_env)
    server = subprocess.Popen([sys.executable, "-m", "flywheel_features", "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    verify = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])
    url = f"https://127.0.0.1:{port}"
    lookup = {"features": ["card_activity:txn_count_24h"], "entities": {"card_id": ["c000001"]}}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        answer = httpx.post(f"{url}/get-online-features", headers=read_header, json=lookup, verify=verify, timeout=30)
        assert answer.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/health", timeout=5)  # the system's trust store does not know the test CA
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    finally:
        server.kill()


def test_a_certificate_without_its_key_exits_2_naming_the_variable(settings, tls_env, tmp_path: Path):
    env = _env(settings, tmp_path, **{CERT_FILE_ENV: tls_env[CERT_FILE_ENV]})
    done = subprocess.run([sys.executable, "-m", "flywheel_features", "serve"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"'{CERT_FILE_ENV}' is set but '{KEY_FILE_ENV}' is not" in done.stderr
    assert "Traceback" not in done.stderr
