"""One way to authenticate callers, shared by every Flywheel service: bearer tokens read from files.

Here in flywheel-contracts (pydantic only) because every service installs it, the router and the
controller included; the header it checks is part of the contract between services.

A credential is a file holding one token (a mounted Kubernetes Secret in the chart, a file under
`data/tokens/` locally). A service names, for each protected route, which credential it accepts; a caller
sends `Authorization: Bearer <token>`. The file is re-read when it changes (mtime or inode), so a rotated
Secret takes effect without a restart. A credential whose file is unset, missing or empty accepts nobody:
a protected route is closed until an operator configures it, never open by omission.

Server side, framework-free (ASGI `scope["headers"]` or any name -> value mapping):

    writers = TokenFile(settings.ingest_token_file)
    match writers.check(headers):               # Check.OK, Check.MISSING, Check.WRONG, Check.NOT_CONFIGURED
        case Check.OK: ...
        case _: answer 401 with unauthorized_body(...) and WWW_AUTHENTICATE

Client side: `TokenFile(path).header()` -> {"Authorization": "Bearer ..."} or {} when no token.

Comparison is constant-time (`hmac.compare_digest`); a token is never logged or echoed back.
"""

from __future__ import annotations

import enum
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "Check",
    "TokenFile",
    "bearer_credential",
    "unauthorized_body",
    "write_token",
    "www_authenticate",
]


class Check(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no (bearer) Authorization header
    WRONG = "wrong"  # a bearer token that is not this credential's
    NOT_CONFIGURED = "not_configured"  # the service has no token for this credential: nobody gets in


class TokenFile:
    """A bearer token kept in a file, re-read when the file changes. `name` says which credential it is in
    answers and logs (e.g. "drift ingest token"), never the token itself."""

    def __init__(self, path: Path | str | None, name: str = "token") -> None:
        self.path = Path(path) if path else None
        self.name = name
        self._stamp: tuple[int, int, int] | None = None
        self._token: bytes | None = None

    @property
    def configured(self) -> bool:
        return self.current() is not None

    def current(self) -> bytes | None:
        """The token now, or None when the file is unset, missing, unreadable or empty."""
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            self._stamp, self._token = None, None
            return None
        stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if stamp != self._stamp:
            try:
                token = self.path.read_bytes().strip()
            except OSError:
                return None
            self._token, self._stamp = (token or None), stamp
        return self._token

    def check(self, headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> Check:
        """Whether the request's `Authorization: Bearer` header carries this credential's token."""
        expected = self.current()
        if expected is None:
            return Check.NOT_CONFIGURED
        given = bearer_credential(headers)
        if given is None:
            return Check.MISSING
        return Check.OK if hmac.compare_digest(given, expected) else Check.WRONG

    def header(self) -> dict[str, str]:
        """The header a client sends with this credential; {} when it has none (the server will say 401)."""
        token = self.current()
        return {"Authorization": f"Bearer {token.decode()}"} if token else {}


def bearer_credential(headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header (ASGI raw headers or a str mapping)."""
    value: bytes | None = None
    if isinstance(headers, Mapping):
        for key, text in headers.items():
            if key.lower() == "authorization":
                value = text.encode("latin-1", "replace")
                break
    else:
        for key, raw in headers:
            if key.lower() == b"authorization":
                value = raw
                break
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(b" ")
    credential = credential.strip()
    if scheme.lower() != b"bearer" or not credential:
        return None
    return credential


def www_authenticate(realm: str) -> tuple[bytes, bytes]:
    """The challenge header of a 401 (RFC 6750), as an ASGI header pair."""
    return b"www-authenticate", f'Bearer realm="{realm}"'.encode()


def unauthorized_body(result: Check, credential: TokenFile, setting: str) -> dict[str, str]:
    """A 401 body that says what to send, naming the credential and the setting, never the token."""
    if result is Check.NOT_CONFIGURED:
        message = f"closed: no {credential.name} is configured ({setting})"
    elif result is Check.MISSING:
        message = f"send Authorization: Bearer <{credential.name}>"
    else:
        message = f"wrong token: send Authorization: Bearer <{credential.name}>"
    return {"error": message, "code": "unauthorized"}


def write_token(path: Path) -> Path:
    """Create `path` with a fresh random token (mode 0600) unless it already holds one; for local stacks
    and tests. Returns the path."""
    if path.exists() and path.read_bytes().strip():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path
