"""The one gate in front of Feast's feature server: which routes exist, who may call them, how big a body is.

Feast's app (kept as it is) serves more than Flywheel uses and checks no caller: its writes change the
features the model scores every card with, its reads hand out any card's totals, and it also serves API
docs, a chat UI and vector search. `Guard` wraps it as pure ASGI, so nothing of a refused request reaches
FastAPI, and it decides from the path alone:

- OPEN    /health, /ready, /metrics: probes and Prometheus (NetworkPolicies restrict who reaches them)
- READ    /get-online-features: `Authorization: Bearer <features read token>` (the transformer's lookups)
- WRITE   /push, /write-to-online-store, /materialize, /materialize-incremental, and Flywheel's
          /stream/transactions (see _stream): the features write token
- any other path: 404. Feast 0.67 also serves /docs, /docs/oauth2-redirect, /redoc, /openapi.json,
  /search, /retrieve-online-documents, /v1/vector_stores[/...], /chat, /ws/chat and /static; nothing in
  Flywheel calls them, so they stay shut rather than guarded.

Each token is checked against its own file only: the read token opens no write, the write token no read.
A token file that is unset, missing or empty closes its routes (401). The body limit is checked before
Feast reads anything: a Content-Length over the limit is refused unread; a chunked body is read here up to
the limit (413 as soon as it passes it) and handed on in one piece. Per request the guard costs one
`stat` of a token file and a scan of the headers; a body with a Content-Length is not touched.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from types import MappingProxyType

from starlette.types import ASGIApp, Receive, Scope, Send

from flywheel_contracts import body as request_body
from flywheel_contracts.auth import Check, TokenFile, unauthorized_body, www_authenticate

from ._errors import BodyTooLarge, Refused, Unauthorized, UnknownRoute, status_of

REALM = "flywheel-features"
READ_SETTING = "FLYWHEEL_FEATURES_READ_TOKEN_FILE"
WRITE_SETTING = "FLYWHEEL_FEATURES_WRITE_TOKEN_FILE"
LIMIT_SETTING = "FLYWHEEL_FEATURES_MAX_BODY_BYTES"


class Access(enum.Enum):
    OPEN = "open"  # anyone who can reach the port
    READ = "read"  # the features read token
    WRITE = "write"  # the features write token


ROUTES: Mapping[str, Access] = MappingProxyType({
    "/health": Access.OPEN,
    "/ready": Access.OPEN,
    "/metrics": Access.OPEN,
    "/get-online-features": Access.READ,
    "/push": Access.WRITE,
    "/write-to-online-store": Access.WRITE,
    "/materialize": Access.WRITE,
    "/materialize-incremental": Access.WRITE,
    "/stream/transactions": Access.WRITE,
})
"""Every path the service answers, and who may call it; any other path is 404."""

_NOT_FOUND = f"no such route: this service serves {', '.join(ROUTES)}"


class Guard:
    """ASGI middleware: route allowlist, bearer tokens per route class, request-body limit."""

    def __init__(self, app: ASGIApp, read: TokenFile, write: TokenFile, max_body_bytes: int) -> None:
        self.app = app
        self.tokens = {Access.READ: (read, READ_SETTING), Access.WRITE: (write, WRITE_SETTING)}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # Feast's /ws/chat: no WebSocket route is served
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            receive = await self._admit(scope, receive)
        except Refused as refusal:
            await _answer(send, refusal)
            return
        except request_body.Disconnected:
            return  # the client left mid-body: no one to answer, nothing for Feast
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """The `receive` to hand Feast if the request may pass; raises Refused otherwise."""
        access = ROUTES.get(scope["path"])
        if access is None:
            raise UnknownRoute(_NOT_FOUND)
        if access is not Access.OPEN:
            token, setting = self.tokens[access]
            result = token.check(scope["headers"])
            if result is not Check.OK:
                raise Unauthorized(unauthorized_body(result, token, setting))
        length = request_body.content_length(scope["headers"])
        request_body.check_declared(length, self.max_body_bytes, LIMIT_SETTING, self._too_large)
        if not any(name == b"transfer-encoding" for name, _ in scope["headers"]):
            return receive  # the server holds the body to its Content-Length (or there is none)
        # Chunked: read up to the limit here, then replay it to Feast as one message.
        body = await request_body.read_body(receive, None, self.max_body_bytes, LIMIT_SETTING, self._too_large)
        return request_body.replay(body, receive)

    def _too_large(self, sentence: str) -> BodyTooLarge:
        return BodyTooLarge(sentence, self.max_body_bytes)


async def _answer(send: Send, refusal: Refused) -> None:
    payload = json.dumps(refusal.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if isinstance(refusal, Unauthorized):
        headers.append(www_authenticate(REALM))
    await send({"type": "http.response.start", "status": status_of(refusal), "headers": headers})
    await send({"type": "http.response.body", "body": payload})
