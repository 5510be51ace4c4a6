"""Small ASGI helpers shared by the inference and admin apps: headers, bodies, JSON answers."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ._errors import MethodNotAllowed, PayloadTooLarge, RouterError, error_body, status_of

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
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is {int(length)} bytes; the limit is {limit} ({setting})")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = bytearray(body)
    while message.get("more_body", False):
        message = await receive()
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes ({setting})")
    return bytes(chunks)


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
    if isinstance(error, MethodNotAllowed):
        headers.append((b"allow", ", ".join(error.allow).encode()))
    await respond(send, status_of(error), error_body(str(error)), headers)
