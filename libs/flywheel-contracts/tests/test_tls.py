"""TLS between services: settings checked at start, real handshakes over loopback with a test CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from flywheel_contracts.tls import CA_FILE_ENV, CERT_FILE_ENV, CLIENT_AUTH_ENV, KEY_FILE_ENV, TLS, TLSConfigError


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """The environment of a service whose certificate the test CA signed for 127.0.0.1."""
    cert = ca.issue_cert("127.0.0.1", "flywheel-drift.flywheel.svc")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {CERT_FILE_ENV: str(tmp_path / "tls.pem"), KEY_FILE_ENV: str(tmp_path / "tls.key"),
            CA_FILE_ENV: str(tmp_path / "ca.crt")}


def test_nothing_set_is_plain_http() -> None:
    tls = TLS.from_env({})
    assert not tls.serving and tls.scheme == "http"
    assert tls.uvicorn_options() == {} and tls.server_context() is None


def test_a_certificate_without_its_key_is_refused_naming_both_settings(files: dict[str, str]) -> None:
    with pytest.raises(TLSConfigError, match=f"'{CERT_FILE_ENV}' is set but '{KEY_FILE_ENV}'"):
        TLS.from_env({CERT_FILE_ENV: files[CERT_FILE_ENV]})


def test_a_missing_file_is_refused_naming_its_setting(files: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match=CA_FILE_ENV):
        TLS.from_env({**files, CA_FILE_ENV: str(tmp_path / "nope.crt")})


def test_client_auth_needs_a_ca_and_a_certificate(files: dict[str, str]) -> None:
    with pytest.raises(TLSConfigError, match=CLIENT_AUTH_ENV):
        TLS.from_env({CERT_FILE_ENV: files[CERT_FILE_ENV], KEY_FILE_ENV: files[KEY_FILE_ENV], CLIENT_AUTH_ENV: "true"})
    with pytest.raises(TLSConfigError, match="expected true or false"):
        TLS.from_env({**files, CLIENT_AUTH_ENV: "maybe"})


def test_uvicorn_options_name_the_files(files: dict[str, str]) -> None:
    options = TLS.from_env({**files, CLIENT_AUTH_ENV: "true"}).uvicorn_options()
    assert options == {"ssl_certfile": files[CERT_FILE_ENV], "ssl_keyfile": files[KEY_FILE_ENV],
                       "ssl_ca_certs": files[CA_FILE_ENV], "ssl_cert_reqs": ssl.CERT_REQUIRED}


async def _exchange(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """One line over a real TLS connection on loopback; raises whatever the handshake raises."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readline())
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"ping\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        if not line:
            raise ConnectionError("the server closed the connection")
        return line
    finally:
        listener.close()
        await listener.wait_closed()


def test_a_client_with_the_ca_talks_to_a_server_with_a_signed_certificate(files: dict[str, str]) -> None:
    tls = TLS.from_env(files)
    assert asyncio.run(_exchange(tls.server_context(), TLS.from_env({CA_FILE_ENV: files[CA_FILE_ENV]}).client_context())) \
        == b"ping\n"


def test_a_client_without_the_ca_refuses_the_server(files: dict[str, str]) -> None:
    server = TLS.from_env(files).server_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_exchange(server, TLS.from_env({}).client_context()))


def test_mutual_tls_refuses_a_caller_without_a_certificate(files: dict[str, str]) -> None:
    server = TLS.from_env({**files, CLIENT_AUTH_ENV: "true"}).server_context()
    anonymous = TLS.from_env({CA_FILE_ENV: files[CA_FILE_ENV]}).client_context()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        asyncio.run(_exchange(server, anonymous))
    # A caller presenting a certificate the same CA signed gets in.
    assert asyncio.run(_exchange(server, TLS.from_env(files).client_context())) == b"ping\n"
