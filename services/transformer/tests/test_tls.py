"""TLS (FLYWHEEL_TLS_*) in `python -m flywheel_transformer`: it answers HTTPS to a caller holding the CA and nothing
to anyone else; it calls the features service, the predictor and the drift sink over https, verifying them with the
CA; one whose certificate the CA did not sign is never sent a request and counts as that call's usual failure
(features: 503 features_unavailable, reason `unreachable`, in feature_lookup_failures_total; predictor: 503 in
predictor_errors_total; sink: events_failed_total); half a configuration exits 2 naming the variable. Real
processes and loopback servers, a test CA (trustme)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from flywheel_contracts.ports import free_port
from flywheel_contracts.tls import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV

from conftest import publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, ThreadedServer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tls")
    publish_version(path / "model_repo")
    return path


def _files(ca: trustme.CA, where: Path, *names: str) -> dict[str, str]:
    where.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    cert.private_key_and_cert_chain_pem.write_to_path(str(where / "tls.crt"))
    cert.private_key_pem.write_to_path(str(where / "tls.key"))
    ca.cert_pem.write_to_path(str(where / "ca.crt"))
    return {CERT_FILE_ENV: str(where / "tls.crt"), KEY_FILE_ENV: str(where / "tls.key"),
            CA_FILE_ENV: str(where / "ca.crt")}


def https(stub: ThreadedServer, files: dict[str, str]) -> ThreadedServer:
    """The stub served over HTTPS with the certificate in `files` (set before it starts: uvicorn loads it then)."""
    stub.server.config.ssl_certfile = files[CERT_FILE_ENV]
    stub.server.config.ssl_keyfile = files[KEY_FILE_ENV]
    stub.url = stub.url.replace("http://", "https://")
    return stub


@contextmanager
def transformer(workdir: Path, extra: dict[str, str], verify: ssl.SSLContext | bool) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_TRANSFORMER_", "FLYWHEEL_TLS_"))}
    env.update({"FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
                "FLYWHEEL_TRANSFORMER_HTTP_PORT": str(port), "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
                "FLYWHEEL_TRANSFORMER_FEATURES_TIMEOUT_S": "2", **extra})
    log = workdir / f"transformer-{port}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "flywheel_transformer"], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    url = f"{'https' if CERT_FILE_ENV in extra else 'http'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"transformer not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def metric(url: str, name: str, verify: ssl.SSLContext | bool = True) -> float:
    text = httpx.get(f"{url}/metrics", verify=verify, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + "{", name + " ")))


def predict(url: str, verify: ssl.SSLContext | bool = True) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/fraud:predict", json={"instances": [transaction(amount=900.0)]},
                      verify=verify, timeout=10)


def test_it_serves_https_and_calls_features_predictor_and_sink_verified_with_the_ca(workdir, ca) -> None:
    own = _files(ca, workdir / "transformer", "127.0.0.1", "flywheel-transformer")
    signed = _files(ca, workdir / "peers", "127.0.0.1")
    verify = ssl.create_default_context(cafile=own[CA_FILE_ENV])
    with ExitStack() as stack:
        features = stack.enter_context(https(FeatureServerStub(), signed))
        predictor = stack.enter_context(https(PredictorStub(), signed))
        sink = stack.enter_context(https(CloudEventSink(), signed))
        env = {**own, "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
               "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
               "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/"}
        with transformer(workdir, env, verify) as url:
            assert url.startswith("https://")
            answer = predict(url, verify)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["score"] == pytest.approx(0.9)
            assert features.requests and predictor.requests
            sink.wait_for(lambda events: len(events) >= 2)  # request and response events, over https
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{url}/v2/health/live", timeout=5)  # the system's trust store does not know the test CA
            with pytest.raises(httpx.TransportError):
                httpx.get(url.replace("https://", "http://") + "/v2/health/live", timeout=5)


@pytest.mark.parametrize("stranger", ["features", "predictor", "sink"])
def test_a_peer_whose_certificate_the_ca_did_not_sign_fails_as_that_call_usually_fails(workdir, ca, stranger) -> None:
    # Only the CA, as an InferenceService pod in kserve mode holds it: plain HTTP served, https peers verified.
    own = {CA_FILE_ENV: _files(ca, workdir / "ca-only", "unused")[CA_FILE_ENV]}
    signed = _files(ca, workdir / "peers", "127.0.0.1")
    unsigned = _files(trustme.CA(), workdir / "stranger", "127.0.0.1")
    stubs = {"features": FeatureServerStub(), "predictor": PredictorStub(), "sink": CloudEventSink()}
    with ExitStack() as stack:
        for name, stub in stubs.items():
            stack.enter_context(https(stub, unsigned if name == stranger else signed))
        env = {**own, "FLYWHEEL_TRANSFORMER_FEATURES_URL": stubs["features"].url,
               "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": stubs["predictor"].url,
               "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": stubs["sink"].url + "/"}
        with transformer(workdir, env, True) as url:
            answer = predict(url)
            if stranger == "features":
                assert answer.status_code == 503 and answer.json()["type"] == "features_unavailable"
                assert "cannot reach it" in answer.json()["error"]  # reason `unreachable`
                assert metric(url, "flywheel_transformer_feature_lookup_failures_total") == 1
            elif stranger == "predictor":
                assert answer.status_code == 503 and "cannot reach the predictor" in answer.json()["error"]
                assert metric(url, "flywheel_transformer_predictor_errors_total") == 1
            else:
                assert answer.status_code == 200, answer.text
                deadline = time.monotonic() + 10
                while metric(url, "flywheel_transformer_events_failed_total") < 1:
                    assert time.monotonic() < deadline, "the refused sink was never counted"
                    time.sleep(0.1)
        assert not stubs[stranger].requests if stranger != "sink" else stubs["sink"].arrived == 0


def test_a_key_without_its_certificate_exits_2_naming_the_variable(workdir, ca) -> None:
    files = _files(ca, workdir / "half", "127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update({"FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"), KEY_FILE_ENV: files[KEY_FILE_ENV]})
    done = subprocess.run([sys.executable, "-m", "flywheel_transformer"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert f"'{KEY_FILE_ENV}' is set but '{CERT_FILE_ENV}' is not" in done.stderr
    assert "Traceback" not in done.stderr
