"""TLS (FLYWHEEL_TLS_*): the health server answers HTTPS to a caller holding the CA only; router replicas found
by pod IP are reached over https and verified against the router Service's name, which is all their certificate
names; a peer the CA did not sign is refused; half a configuration exits 2 naming the variable. Real uvicorn
servers on loopback, a test CA (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn

from flywheel_contracts.ports import free_port
from flywheel_contracts.tls import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV, TLS
from flywheel_controller._config import Settings
from flywheel_controller._discovery import router_replicas
from flywheel_controller._leader import AlwaysLeader
from flywheel_controller._main import run_until_signal
from flywheel_controller._metrics import Metrics
from flywheel_controller._providers import make_providers

from fake_apiserver import NS, FakeApiServer
from test_discovery import add_slice, endpoint
from test_provider_router import TOKEN, Replica, rollout

pytestmark = pytest.mark.anyio
SERVICE = "flywheel-router"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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



async def _stats(scope, receive, send) -> None:
    """A router replica's admin port as far as the statistics go (bearer token, RouterStats JSON)."""
    if scope["type"] != "http":
        return
    allowed = dict(scope["headers"]).get(b"authorization") == f"Bearer {TOKEN}".encode()
    body = json.dumps(Replica("router-a").stats("fraud") if allowed else {"error": "token"}).encode()
    await send({"type": "http.response.start", "status": 200 if allowed else 401,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def https_replica(files: dict[str, str]) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_stats, host="127.0.0.1", port=port, log_config=None, lifespan="off",
                                           ssl_certfile=files[CERT_FILE_ENV], ssl_keyfile=files[KEY_FILE_ENV]))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def test_a_replica_found_by_address_is_verified_against_the_service_name(ca, tmp_path) -> None:
    tls = TLS.from_env(_write(ca, tmp_path / "controller", "flywheel-controller"))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    api = FakeApiServer()
    async with api.client() as kube, https_replica(_write(ca, tmp_path / "router", SERVICE)) as port:
        add_slice(api, "router-abc", [endpoint("127.0.0.1", "router-a")], service=SERVICE,
                  ports=[{"name": "admin", "port": port}])

        async def replicas() -> list[tuple[str, str]]:
            return await router_replicas(kube, NS, SERVICE, "admin", 8001, scheme="https")

        assert await replicas() == [("router-a", f"https://127.0.0.1:{port}")]
        for name, read in ((SERVICE, 1), (None, 0)):  # without the name, 127.0.0.1 is not on the certificate
            provider = make_providers(router_replicas=replicas, router_token_file=token, drift_url=None,
                                      prometheus_url=None, verify=tls.client_context(), router_server_name=name)
            router = provider.providers["router"]
            try:
                assert await router.baseline(rollout()) == read, name
                assert router.replica_failures == 1 - read
            finally:
                await router.aclose()


async def test_a_replica_whose_certificate_the_ca_did_not_sign_is_not_read(ca, tmp_path) -> None:
    tls = TLS.from_env(_write(ca, tmp_path / "controller", "flywheel-controller"))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    async with https_replica(_write(trustme.CA(), tmp_path / "stranger", SERVICE)) as port:
        async def replicas() -> list[tuple[str, str]]:
            return [("router-a", f"https://127.0.0.1:{port}")]

        provider = make_providers(router_replicas=replicas, router_token_file=token, drift_url=None,
                                  prometheus_url=None, verify=tls.client_context(), router_server_name=SERVICE)
        router = provider.providers["router"]
        try:
            assert await router.baseline(rollout()) == 0 and router.replica_failures == 1
        finally:
            await router.aclose()


class _Idle:
    ready = True

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_the_health_server_answers_https_to_a_caller_holding_the_ca_only(ca, tmp_path) -> None:
    files = _write(ca, tmp_path / "controller", "127.0.0.1")
    port = free_port()
    settings = Settings(http_host="127.0.0.1", http_port=port)
    done: asyncio.Future = asyncio.get_running_loop().create_future()
    running = asyncio.create_task(run_until_signal(_Idle(), AlwaysLeader(), settings, Metrics(), done,  # type: ignore[arg-type]
                                                   tls=TLS.from_env(files)))
    try:
        verify = ssl.create_default_context(cafile=files[CA_FILE_ENV])
        async with httpx.AsyncClient(verify=verify, timeout=2) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    answer = await client.get(f"https://127.0.0.1:{port}/healthz")
                    break
                await asyncio.sleep(0.02)
            assert answer.json() == {"status": "alive"}
        async with httpx.AsyncClient(timeout=2) as system_trust:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await system_trust.get(f"https://127.0.0.1:{port}/healthz")
            with pytest.raises(httpx.TransportError):
                await system_trust.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        done.set_result(None)
        await running


def test_a_certificate_without_its_key_exits_2_naming_the_variable(ca, tmp_path) -> None:
    files = _write(ca, tmp_path / "controller", "flywheel-controller")
    env = {**os.environ, CERT_FILE_ENV: files[CERT_FILE_ENV]}
    result = subprocess.run([sys.executable, "-m", "flywheel_controller"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert f"'{CERT_FILE_ENV}' is set but '{KEY_FILE_ENV}' is not" in result.stderr
    assert "Traceback" not in result.stderr
