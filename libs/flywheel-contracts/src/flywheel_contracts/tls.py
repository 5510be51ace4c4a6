"""One way to speak TLS between Flywheel services: three files named by three environment variables.

Here in flywheel-contracts (standard library `ssl` only) because every service serves or calls another, and
the settings must mean the same thing everywhere, as the bearer tokens of `auth` do:

    FLYWHEEL_TLS_CERT_FILE   this service's certificate chain (PEM)      serve HTTPS when set with the key
    FLYWHEEL_TLS_KEY_FILE    its private key (PEM)
    FLYWHEEL_TLS_CA_FILE     the CA bundle that signs the other services  verify them with it (else the system's)
    FLYWHEEL_TLS_CLIENT_AUTH "true": callers must present a certificate the CA signed (mutual TLS)

In the chart these are one mounted Secret of type kubernetes.io/tls (`tls.crt`, `tls.key`, `ca.crt`, as
cert-manager writes it). Locally nothing is set: plain HTTP on 127.0.0.1. Half a configuration (a certificate
without its key, a file that is not there, client auth without a CA) is refused at start-up with a message
naming the variable, never served as plain HTTP by mistake.

Certificates are read when a server starts or a client is built: a renewed certificate reaches a service at its
next restart (`kubectl rollout restart`; docs/security.md, "TLS between services").

    tls = TLS.from_env()
    uvicorn.Config(app, **tls.uvicorn_options())       # server: {} when TLS is off
    httpx.AsyncClient(verify=tls.client_context())     # client: verifies peers with the CA
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CA_FILE_ENV", "CERT_FILE_ENV", "CLIENT_AUTH_ENV", "KEY_FILE_ENV", "TLS", "TLSConfigError"]

CERT_FILE_ENV = "FLYWHEEL_TLS_CERT_FILE"
KEY_FILE_ENV = "FLYWHEEL_TLS_KEY_FILE"
CA_FILE_ENV = "FLYWHEEL_TLS_CA_FILE"
CLIENT_AUTH_ENV = "FLYWHEEL_TLS_CLIENT_AUTH"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class TLSConfigError(ValueError):
    """The TLS settings are incomplete or name files that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class TLS:
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    client_auth: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLS:
        """The settings from the environment, checked (raises TLSConfigError naming the variable)."""
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        flag = env.get(CLIENT_AUTH_ENV, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise TLSConfigError(f"Config '{CLIENT_AUTH_ENV}' has value {flag!r}: expected true or false")
        tls = cls(path(CERT_FILE_ENV), path(KEY_FILE_ENV), path(CA_FILE_ENV), flag in _TRUE)
        tls.check()
        return tls

    @property
    def serving(self) -> bool:
        """Whether this service answers HTTPS (it has a certificate and its key)."""
        return self.cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.serving else "http"

    def check(self) -> None:
        """Refuse half a configuration: each named file must be readable, a certificate needs its key."""
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = (CERT_FILE_ENV, KEY_FILE_ENV) if self.key_file is None else (KEY_FILE_ENV, CERT_FILE_ENV)
            raise TLSConfigError(f"Config '{given}' is set but '{missing}' is not: HTTPS needs both")
        if self.client_auth and (self.ca_file is None or not self.serving):
            raise TLSConfigError(f"Config '{CLIENT_AUTH_ENV}' needs '{CA_FILE_ENV}' (to check callers' certificates) "
                                 f"and '{CERT_FILE_ENV}'/'{KEY_FILE_ENV}' (to serve HTTPS)")
        for name, file in ((CERT_FILE_ENV, self.cert_file), (KEY_FILE_ENV, self.key_file), (CA_FILE_ENV, self.ca_file)):
            if file is not None and not os.access(file, os.R_OK):
                raise TLSConfigError(f"Config '{name}' has value '{file}': expected a readable PEM file")

    def server_context(self) -> ssl.SSLContext | None:
        """The context a server wraps its sockets in (asyncio, hypercorn); None when TLS is off."""
        if not self.serving:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_auth:
            context.load_verify_locations(cafile=str(self.ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for `uvicorn.Config`: {} when TLS is off."""
        if not self.serving:
            return {}
        options: dict[str, Any] = {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
        if self.client_auth:
            options |= {"ssl_ca_certs": str(self.ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options

    def client_context(self) -> ssl.SSLContext:
        """The context a client verifies servers with: the CA file when set (else the system's trust store);
        it presents this service's own certificate when it has one, for servers that require mutual TLS."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.serving:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context
