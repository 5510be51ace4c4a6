"""A pure-ASGI layer in front of KServe's app that answers `POST /v1/models/<m>:predict` itself.

Why: behind KServe's app each prediction pays for uvicorn's request object, FastAPI's routing and dependency
injection, KServe's timing middleware, DataPlane (decode, model lookup, encode), `Model.__call__` with its three
histograms and a response class; the predictor took its hot route off that path the same way (its _fastpath).
Here the request's headers become the dict KServe would have built, the body is read under MAX_BODY_BYTES
(`_limits`, the same 413), decoded once with orjson as KServe does, and handed to `FraudTransformer.score`
(preprocess, predict, postprocess, counted and timed as on KServe's path); the answer is written here with
KServe's bytes (orjson with its options) and headers (the model's, then content-length and content-type), and
a RequestError with the bytes of `_server`'s handler (`error_answer`, which that handler uses too).

Anything the common case does not cover goes to KServe's app untouched (the body, once read, replayed), so its
answer stays KServe's: other paths and methods (MethodCheck's 405 included), a model not ready yet (KServe's
503), CloudEvents (`ce-*` headers, `application/cloudevents+json`, or a JSON body shaped like a structured
event), a content type KServe does not decode itself (`application/json; charset=utf-8` included: the model then
decodes it with Python's json), and a body orjson refuses (KServe's path names the unrepresentable number).
FLYWHEEL_TRANSFORMER_FAST_PATH=false sends every request KServe's way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from flywheel_contracts import body as request_body
from flywheel_contracts.auth import www_authenticate

from ._errors import BodyTooLarge, InternalFailure, RequestError, Unauthorized, error_body, status_of
from ._limits import SETTING, refuse

if TYPE_CHECKING:
    from ._model import FraudTransformer

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("flywheel_transformer")

KSERVE_DECODED = frozenset({b"application/json", b"application/ld+json"})
"""Content types KServe's DataPlane decodes with orjson itself (its JSON_HEADERS, less the CloudEvents one)."""

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY  # what KServe's ORJSONResponse renders with
_JSON_TYPE = (b"content-type", b"application/json")
_STRUCTURED_EVENT = ("time", "type", "source", "id", "specversion", "data")  # kserve's is_structured_cloudevent


def error_answer(error: RequestError) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and extra headers of a RequestError's answer, as Starlette's JSONResponse renders the body;
    a 401 challenges for the debug token (RFC 6750)."""
    body = json.dumps(error_body(error), ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    headers = dict(error.headers)
    if isinstance(error, Unauthorized):
        name, value = www_authenticate("flywheel-transformer")
        headers = {name.decode(): value.decode()}
    return int(status_of(error)), body.encode("utf-8"), headers


class FastPath:
    """ASGI app: the model's V1 predict route here, everything else (and every unusual predict) to `app`."""

    def __init__(self, app: ASGIApp, model: FraudTransformer, max_body_bytes: int) -> None:
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.path = f"/v1/models/{model.name}:predict"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers: dict[str, str] = {}
        content_type = length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
            elif key.startswith(b"ce-"):  # a binary-mode CloudEvent: KServe unwraps it and answers one
                return await self.app(scope, receive, send)
            headers[key.decode("latin-1")] = value.decode("latin-1")  # KServe's dict: the last of a name wins
        if content_type is not None and content_type not in KSERVE_DECODED:
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        try:
            body = await request_body.read_body(receive, length, limit, SETTING,
                                                lambda sentence: BodyTooLarge(sentence, limit))
        except BodyTooLarge as e:
            return await refuse(send, e)
        except request_body.Disconnected:
            return  # the client is gone: nothing to answer
        decoded = _decoded(body) if self.model.ready else None
        if decoded is None:
            return await self.app(scope, request_body.replay(body, receive), send)
        try:
            answer, answer_headers = await self.model.score(decoded, headers)
        except RequestError as e:
            status, content, extra = error_answer(e)
            return await _respond(send, status, content, extra)
        except Exception:  # not one of ours (score turns bugs into InternalFailure): still no traceback sent
            log.exception("%s: request failed unexpectedly", self.model.name)
            status, content, extra = error_answer(InternalFailure())
            return await _respond(send, status, content, extra)
        await _respond(send, 200, orjson.dumps(answer, option=_ORJSON_OPTIONS), answer_headers)


def _decoded(body: bytes) -> Any:
    """The body's JSON value, or None where KServe's path must answer: not JSON to orjson (KServe's decoder
    refuses it and the 400 names the number), JSON null (the same 400 as there), or a structured CloudEvent."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and all(key in value for key in _STRUCTURED_EVENT):
        return None
    return value


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Headers in Starlette's order: the answer's own, then content-length and content-type."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    raw.append(_JSON_TYPE)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
