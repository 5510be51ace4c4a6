"""TLS (FLYWHEEL_TLS_*): both ports of `python -m flywheel_router` answer HTTPS to a caller holding the CA and
nothing to anyone else; both upstream clients verify https transformers with the CA `build` hands them, and a
transformer whose certificate the CA did not sign is a `connect` failure; half a configuration exits 2 naming
the variable. Real processes and servers, a test CA (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn

from flywheel_contracts.tls import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV, TLS
from flywheel_router._config import Settings
from flywheel_router._main import build
from flywheel_router._upstream import UpstreamFailure

from test_h1 import App
from test_process import free_port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _write(ca: trustme.CA, where: Path, *names: str) -> dict[str, str]:
    where.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    cert.private_key_and_cert_chain_pem.write_to_path(str(where / "tls.crt"))
    cert.private_key_pem.write_to_path(str(where / "tls.key"))
    ca.cert_pem.write_to_path(str(where / "ca.crt"))
    return {CERT_FILE_ENV: str(where / "tls.crt"), KEY_FILE_ENV: str(where / "tls.key"), CA_FILE_ENV: str(where / "ca.crt")}


@pytest.fixture
def tls_env(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    return _write(ca, tmp_path / "router", "127.0.0.1", "flywheel-router")


@contextlib.asynccontextmanager
async def https_transformer(files: dict[str, str]) -> AsyncIterator[str]:
    """An echoing upstream on loopback serving HTTPS with the certificate in `files`."""
    port = free_port()
    config = uvicorn.Config(App(), host="127.0.0.1", port=port, log_config=None, lifespan="off",
                            ssl_certfile=files[CERT_FILE_ENV], ssl_keyfile=files[KEY_FILE_ENV])
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.mark.anyio
@pytest.mark.parametrize("client", ["h1", "httpx"])
async def test_both_upstream_clients_verify_https_transformers_with_the_ca(client, ca, tls_env, tmp_path) -> None:
    settings = Settings(default_upstream="http://127.0.0.1:9", upstream_client=client,
                        routes_file=tmp_path / "routes.json")
    _, _, upstreams = build(settings, TLS.from_env(tls_env))
    try:
        async with https_transformer(_write(ca, tmp_path / "transformer", "127.0.0.1")) as signed:
            answer = await upstreams.send("POST", f"{signed}/v1/models/fraud:predict", [], b"{}")
            assert answer.status == 200 and answer.body == b"{}"
        stranger = _write(trustme.CA(), tmp_path / "stranger", "127.0.0.1")  # not signed by the router's CA
        async with https_transformer(stranger) as unsigned:
            with pytest.raises(UpstreamFailure) as failure:
                await upstreams.send("POST", f"{unsigned}/v1/models/fraud:predict", [], b"{}")
            assert failure.value.kind == "connect"
    finally:
        await upstreams.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_both_ports_answer_https_to_a_caller_holding_the_ca_only(tls_env, tmp_path) -> None:
    ports = {"http": free_port(), "admin": free_port()}
    (tmp_path / "token").write_text("tok")
    env = {**os.environ, **tls_env,
           "FLYWHEEL_ROUTER_HTTP_HOST": "127.0.0.1", "FLYWHEEL_ROUTER_ADMIN_HOST": "127.0.0.1",
           "FLYWHEEL_ROUTER_HTTP_PORT": str(ports["http"]), "FLYWHEEL_ROUTER_ADMIN_PORT": str(ports["admin"]),
           "FLYWHEEL_ROUTER_TOKEN_FILE": str(tmp_path / "token"),
           "FLYWHEEL_ROUTER_ROUTES_FILE": str(tmp_path / "routes.json"),
           "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": "https://127.0.0.1:9"}
    with open(tmp_path / "router.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "flywheel_router"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    verify = ssl.create_default_context(cafile=tls_env[CA_FILE_ENV])
    base, admin = f"https://127.0.0.1:{ports['http']}", f"https://127.0.0.1:{ports['admin']}"
    try:
        _wait_https(f"{base}/v2/health/ready", verify, process, tmp_path / "router.log")
        auth = {"authorization": "Bearer tok"}
        put = httpx.put(f"{admin}/v1/routes/fraud", json={"stable": {"version": "v1"}}, headers=auth, verify=verify)
        assert put.status_code == 201
        for url in (base, admin):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{url}/v2/health/live", timeout=5)  # the system's trust store does not know the test CA
            with pytest.raises(httpx.TransportError):
                httpx.get(url.replace("https://", "http://") + "/v2/health/live", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=15)


def _wait_https(url: str, verify: ssl.SSLContext, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{url} never answered 200 over HTTPS:\n{log.read_text()}"
        time.sleep(0.1)


def test_a_certificate_without_its_key_exits_2_naming_the_variable(tls_env) -> None:
    env = {**os.environ, CERT_FILE_ENV: tls_env[CERT_FILE_ENV]}
    result = subprocess.run([sys.executable, "-m", "flywheel_router"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert f"'{CERT_FILE_ENV}' is set but '{KEY_FILE_ENV}' is not" in result.stderr
    assert "Traceback" not in result.stderr
