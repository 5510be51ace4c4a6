"""A pure-ASGI layer in front of KServe's FastAPI app that answers the hosted model's inference.

Why: behind FastAPI each request pays for routing, dependency injection, header dicts, pydantic
request models, several awaits through KServe's DataPlane and Model.__call__ (with three histograms)
and response classes; for a model that scores a row in tens of microseconds that overhead is most of
the cost. This layer matches the exact paths of the hosted model's V1 predict and V2 infer routes
(plus the versioned V2 routes KServe 0.21 answers with 501), parses with orjson, validates with
`_validation` (JSON and the binary tensor extension), scores on the model's thread pool and writes
the response itself. Everything else — health, readiness, metadata, other models, CloudEvents —
falls through to KServe unchanged; /metrics is answered here so several workers' samples add up.
"""

from __future__ import annotations

import logging
import uuid
from time import perf_counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ._errors import (
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    PredictorError,
    UnsupportedMediaType,
    VersionNotServed,
    error_body,
    status_of,
)
from ._metrics import render
from ._model import OnnxModel
from ._validation import is_json, parse_v1, parse_v2, parse_v2_binary

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

log = logging.getLogger("flywheel_predictor")

_JSON = b"application/json"
_OCTET_STREAM = b"application/octet-stream"
_CLOUDEVENT = b"application/cloudevents"
_BINARY_HEADER = b"inference-header-content-length"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_JSON_HEADERS = [(b"content-type", _JSON)]


class FastPath:
    """ASGI app: the hosted model's inference routes here, everything else to `app` (KServe).

    With `serve_inference` off (FLYWHEEL_PREDICTOR_FAST_PATH=false) inference goes to KServe's own
    handlers too, and only the route fixes stay: versioned V2 routes, 405 on GET, summed /metrics.
    """

    def __init__(self, app: ASGIApp, model: OnnxModel, max_body_bytes: int, serve_inference: bool = True) -> None:
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        name, version = model.name, model.version
        self.versions_prefix = f"/v2/models/{name}/versions/"
        self.rewrites = {
            f"{self.versions_prefix}{version}": f"/v2/models/{name}",
            f"{self.versions_prefix}{version}/ready": f"/v2/models/{name}/ready",
        }
        self.routes = {f"/v1/models/{name}:predict": "v1", f"/v2/models/{name}/infer": "v2"}
        versioned_infer = f"{self.versions_prefix}{version}/infer"
        if serve_inference:
            self.routes[versioned_infer] = "v2"
            self.handlers = {"v1": self._v1, "v2": self._v2}
        else:
            self.rewrites[versioned_infer] = f"/v2/models/{name}/infer"
            self.handlers = {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            protocol = self.routes.get(path)
            if protocol is not None:
                if scope["method"] != "POST":
                    # KServe would read "fraud:predict" as a model name and answer 404.
                    error = MethodNotAllowed(f"{path} takes POST with a JSON inference request, not {scope['method']}")
                    return await _respond(send, status_of(error), error_body(str(error)))
                if protocol in self.handlers:
                    return await self._infer(protocol, scope, receive, send)
            elif path == "/metrics" and scope["method"] == "GET":
                return await self._metrics(scope, send)
            rewrite = self.rewrites.get(path)
            if rewrite is not None:
                scope = {**scope, "path": rewrite, "raw_path": rewrite.encode()}
            elif path.startswith(self.versions_prefix):
                asked = path[len(self.versions_prefix):].split("/", 1)[0]
                error = VersionNotServed(
                    f"model '{self.model.name}' version '{asked}' is not served here; this server serves {self.model.version}"
                )
                return await _respond(send, status_of(error), error_body(str(error)))
        await self.app(scope, receive, send)

    async def _infer(self, protocol: str, scope: dict, receive: Callable, send: Callable) -> None:
        started = perf_counter()
        content_type = binary_header = length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
            elif key == _BINARY_HEADER:
                binary_header = value
            elif key.startswith(b"ce-"):
                return await self.app(scope, receive, send)  # binary-mode CloudEvent: KServe unwraps it
        if content_type is not None and content_type.startswith(_CLOUDEVENT):
            return await self.app(scope, receive, send)  # structured-mode CloudEvent
        metrics = self.model.metrics
        try:
            if binary_header is None and content_type is not None and not is_json(content_type):
                raise UnsupportedMediaType(
                    f"content-type {content_type.decode('latin-1')!r} is not JSON; send application/json "
                    "(or binary tensors with the inference-header-content-length header)"
                )
            body = await self._body(receive, length)
            payload, headers = await self.handlers[protocol](body, binary_header)
        except PredictorError as e:
            status = status_of(e)
            if status >= 500:
                log.error("inference failed: %s", e)
            metrics.requests(protocol, status).inc()
            return await _respond(send, status, error_body(str(e)))
        await _respond(send, 200, payload, headers)
        metrics.requests(protocol, 200).inc()
        metrics.request_seconds[protocol].observe(perf_counter() - started)

    async def _v1(self, body: bytes, binary_header: bytes | None) -> tuple[bytes, list]:
        out = await self.model.infer(parse_v1(_parse(body), self.model.spec.dim))
        return orjson.dumps({"predictions": out}, option=_NUMPY), _JSON_HEADERS

    async def _v2(self, body: bytes, binary_header: bytes | None) -> tuple[bytes, list]:
        spec = self.model.spec
        if binary_header is None:
            request = parse_v2(_parse(body), spec)
        else:
            request = parse_v2_binary(body, binary_header, spec)
        out = await self.model.infer(request.rows)
        output: dict[str, Any] = {"name": spec.output_name, "shape": out.shape, "datatype": "FP32"}
        response = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "id": request.request_id or str(uuid.uuid4()),
            "outputs": [output],
        }
        if not request.binary_output:
            output["data"] = out.ravel()
            return orjson.dumps(response, option=_NUMPY), _JSON_HEADERS
        raw = out.astype("<f4", copy=False).tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        head = orjson.dumps(response)
        return head + raw, [(b"content-type", _OCTET_STREAM), (_BINARY_HEADER, str(len(head)).encode())]

    async def _body(self, receive: Callable, length: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"request body is {int(length)} bytes; the limit is {limit} (FLYWHEEL_PREDICTOR_MAX_BODY_BYTES)")
        message = await receive()
        if not message.get("more_body", False):
            return message.get("body", b"")  # the usual case: the whole body in one message
        body = bytearray(message.get("body", b""))
        while message.get("more_body", False):
            message = await receive()
            body += message.get("body", b"")
            if len(body) > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes (FLYWHEEL_PREDICTOR_MAX_BODY_BYTES)")
        return bytes(body)

    async def _metrics(self, scope: dict, send: Callable) -> None:
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), None)
        body, content_type = render(accept)
        await _respond(send, 200, body, [(b"content-type", content_type.encode())])


def _parse(body: bytes) -> Any:
    if not body:
        raise InvalidRequest("request body is empty; send a JSON inference request")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from e


async def _respond(send: Callable, status: int, body: bytes, headers: list = _JSON_HEADERS) -> None:
    """`headers` must include the content type; content-length is added here."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
