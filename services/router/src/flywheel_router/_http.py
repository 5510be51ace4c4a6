"""Small ASGI helpers shared by the inference and admin apps: headers, bodies, JSON answers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from flywheel_contracts import body as request_body

from ._errors import PayloadTooLarge, RouterError, error_body, status_of

log = logging.getLogger("flywheel_router")

JSON_HEADERS = [(b"content-type", b"application/json")]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""RFC 9110 7.6.1: meaningful for one connection only, never forwarded (nor what `connection` names)."""


def hop_by_hop(headers: dict[bytes, bytes]) -> frozenset[bytes]:
    """The standard hop-by-hop headers plus any the Connection header names."""
    named = headers.get(b"connection")
    if not named:
        return HOP_BY_HOP
    return HOP_BY_HOP | {part.strip().lower() for part in named.split(b",") if part.strip()}


async def read_body(receive: Callable, length: bytes | None, limit: int, setting: str) -> bytes:
    """The body under `limit` (flywheel_contracts.body); PayloadTooLarge over it, body.Disconnected when the
    client left before its end."""
    return await request_body.read_body(receive, length, limit, setting, PayloadTooLarge)


async def respond(send: Callable, status: int, body: bytes, headers: list | None = None) -> None:
    """`headers` must carry the content type; content-length is added here."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*(JSON_HEADERS if headers is None else headers), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Callable, status: int, document: object, headers: list | None = None) -> None:
    await respond(send, status, orjson.dumps(document), [*JSON_HEADERS, *(headers or [])])


async def respond_error(send: Callable, error: RouterError, extra: list | None = None) -> None:
    headers = [*JSON_HEADERS, *(extra or [])]
    headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    await respond(send, status_of(error), error_body(error), headers)


class Tracked:
    """`send`, remembering whether the answer has started (an unexpected error can then only drop it)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Callable) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


async def respond_unexpected(send: Tracked, error: Exception, scope: Mapping[str, Any]) -> None:
    """An exception outside the error family is a bug: log its traceback once and answer 500 with a generic
    body (never the exception's text); if the answer had started, re-raise so the server drops the connection."""
    if send.started:
        raise error
    log.error("%s %s failed unexpectedly", scope.get("method"), scope.get("path"), exc_info=error)
    await respond(send, 500, error_body(error))
