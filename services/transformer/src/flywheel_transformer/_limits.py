"""A request-body limit in front of KServe's app, enforced before anything is parsed.

KServe's V1 handler reads the whole body and parses it before the transformer can count instances, so
MAX_INSTANCES alone bounds nothing: a 1 GiB body would be read and parsed first. This pure-ASGI layer
refuses a Content-Length over FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES without reading a byte, and a body
without one (chunked) as soon as it grows past the limit; either way a 413 with a JSON body naming the
limit. A body within the limit is read here and handed on whole (the app would read it all anyway).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flywheel_contracts import body as request_body

from ._errors import BodyTooLarge, error_body, status_of

# ASGI's types (a scope and messages are mutable mappings), without importing a web framework.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SETTING = "FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES"


class BodyLimit:
    """ASGI middleware: HTTP request bodies over `max_bytes` get a 413 and never reach `app`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        try:
            body = await request_body.read_body(receive, request_body.content_length(scope["headers"]), limit,
                                                SETTING, lambda sentence: BodyTooLarge(sentence, limit))
        except BodyTooLarge as e:
            return await refuse(send, e)
        except request_body.Disconnected:
            return  # the client is gone: nothing to answer
        await self.app(scope, request_body.replay(body, receive), send)


async def refuse(send: Send, error: BodyTooLarge) -> None:
    """The 413 of a body over the limit; the connection closes (the rest of the body is never read)."""
    body = json.dumps(error_body(error)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": int(status_of(error)), "headers": headers})
    await send({"type": "http.response.body", "body": body})
