"""One way to read an HTTP request body under a limit, for every service's ASGI layer.

A Content-Length over the limit is refused before a byte is read; a body without one (chunked) as soon as what
arrived passes the limit, whichever message it arrives in. Each service raises its own error family's 413
(`too_large` builds it from the sentence), so the answer's shape stays the service's. `replay` hands a body read
here to the app behind as the single message it would have received.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class Disconnected(Exception):
    """The client went away before the whole body arrived: there is no one to answer."""


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The raw Content-Length of an ASGI scope's headers, if any."""
    return next((value for key, value in headers if key == b"content-length"), None)


def check_declared(length: bytes | None, limit: int, setting: str, too_large: Callable[[str], Exception]) -> None:
    """Refuse a declared length over `limit` (a malformed one is left to the server, which rejects it)."""
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise too_large(f"the request body is {int(length)} bytes; the limit is {limit} ({setting})")


async def read_body(receive: Receive, length: bytes | None, limit: int, setting: str,
                    too_large: Callable[[str], Exception]) -> bytes:
    """The whole body, or `too_large(sentence)` raised as soon as it is known to pass `limit`; Disconnected when
    the client left first."""
    check_declared(length, limit, setting, too_large)
    message = await receive()
    if message["type"] != "http.request":
        raise Disconnected()
    body = message.get("body", b"")
    if len(body) > limit:
        raise too_large(f"the request body exceeds {limit} bytes ({setting})")
    if not message.get("more_body", False):
        return body  # the usual case: the whole body in one message
    chunks = bytearray(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            raise Disconnected()
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise too_large(f"the request body exceeds {limit} bytes ({setting})")
    return bytes(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` as one message, then defers to the real one (the app may wait for a
    disconnect after the body)."""
    given = False

    async def receive_replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_replayed
