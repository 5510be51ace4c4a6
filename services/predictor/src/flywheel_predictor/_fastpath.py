"""A pure-ASGI layer in front of KServe's FastAPI app that answers the model's inference, for every version.

Why: behind FastAPI each request pays for routing, dependency injection, header dicts, pydantic
request models, several awaits through KServe's DataPlane and Model.__call__ (with three histograms)
and response classes; for a model that scores a row in tens of microseconds that overhead is most of
the cost. This layer matches the exact paths of the model's V1 predict and V2 infer routes and the
versioned V2 routes (`/v2/models/<m>/versions/<v>[/ready|/infer]`, which KServe 0.21 answers with
501), picks the version (path, else the `x-flywheel-model-version` header, else the default: one dict
lookup, and none at all for the default), parses with orjson, validates with `_validation` (JSON and
the binary tensor extension), scores on that version's inference lane and writes the response itself,
naming the version that scored in the same header. Everything else — health, readiness, unversioned
metadata, other models, CloudEvents — falls through to KServe (versioned calls rewritten to KServe's
unversioned route plus the header, which the data plane honours); /metrics is answered here so several
workers' samples add up. ASGI lifespan events start and stop the versions' repository poll.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

import orjson

from flywheel_contracts import body as request_body

from ._errors import (
    InvalidRequest,
    MethodNotAllowed,
    ModelNotServed,
    PayloadTooLarge,
    PredictorError,
    UnsupportedMediaType,
    VersionUnavailable,
    error_body,
    status_of,
)
from ._metrics import render
from ._model import OnnxModel
from ._validation import is_json, parse_v1, parse_v2, parse_v2_binary
from ._versions import VERSION_HEADER, VersionSet, requested_version

Scope = MutableMapping[str, Any]  # ASGI's scope and messages are mutable mappings
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Scope]], Callable[[Scope], Awaitable[None]]], Awaitable[None]]

log = logging.getLogger("flywheel_predictor")

_JSON = b"application/json"
_OCTET_STREAM = b"application/octet-stream"
_CLOUDEVENT = b"application/cloudevents"
_BINARY_HEADER = b"inference-header-content-length"
_VERSION_HEADER = VERSION_HEADER.encode()
_MODELS_PREFIX = "/v2/models/"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_JSON_HEADERS = [(b"content-type", _JSON)]
_PLATFORM = "onnxruntime_onnx"


class FastPath:
    """ASGI app: the model's inference and versioned routes here, everything else to `app` (KServe).

    With `serve_inference` off (FLYWHEEL_PREDICTOR_FAST_PATH=false) inference goes to KServe's own
    handlers too, and only the route fixes stay: versioned V2 routes, 405 on GET, summed /metrics.
    """

    def __init__(self, app: ASGIApp, versions: VersionSet, max_body_bytes: int, serve_inference: bool = True) -> None:
        self.app = app
        self.versions = versions
        self.default = versions.default
        self.max_body_bytes = max_body_bytes
        name = versions.name
        self.unversioned_infer = f"/v2/models/{name}/infer"
        self.versions_prefix = f"/v2/models/{name}/versions/"
        self.routes = {f"/v1/models/{name}:predict": "v1", self.unversioned_infer: "v2"}
        self.handlers = {"v1": self._v1, "v2": self._v2} if serve_inference else {}
        self._default_version = self.default.version.encode()
        self._json_headers: dict[str, list] = {}

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            protocol = self.routes.get(path)
            if protocol is not None:
                if scope["method"] != "POST":
                    # KServe would read "fraud:predict" as a model name and answer 404.
                    error = MethodNotAllowed(f"{path} takes POST with a JSON inference request, not {scope['method']}")
                    return await _refuse(send, error, allow=b"POST")
                if protocol in self.handlers:
                    return await self._infer(protocol, scope, receive, send, None)
            elif path == "/metrics" and scope["method"] == "GET":
                return await self._metrics(scope, send)
            elif path.startswith(self.versions_prefix):
                version, _, route = path[len(self.versions_prefix) :].partition("/")
                if route in ("", "ready", "infer"):
                    return await self._versioned(version, route, scope, receive, send)
            elif path.startswith(_MODELS_PREFIX):
                name, versioned, rest = path[len(_MODELS_PREFIX) :].partition("/versions/")
                version, _, route = rest.partition("/")
                if versioned and name and "/" not in name and version and route in ("", "ready", "infer"):
                    # KServe answers another model's versioned routes 501 "Model versioning not supported yet".
                    return await self._other_model(name, route, scope, send)
        elif kind == "lifespan":
            receive = self._watch_lifespan(receive)
        await self.app(scope, receive, send)

    def _watch_lifespan(self, receive: Callable) -> Callable:
        async def watched() -> dict:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.versions.start()
            elif message["type"] == "lifespan.shutdown":
                await self.versions.stop()
            return message

        return watched

    async def _versioned(self, version: str, route: str, scope: Scope, receive: Callable, send: Callable) -> None:
        """`/v2/models/<m>/versions/<v>` (metadata), `.../ready` and `.../infer`; loads <v> on demand."""
        method = scope["method"]
        if route == "infer":
            if method != "POST":
                error = MethodNotAllowed(f"{scope['path']} takes POST with an inference request, not {method}")
                return await _refuse(send, error, allow=b"POST")
            if self.handlers:
                return await self._infer("v2", scope, receive, send, version)
            return await self.app(self._as_unversioned(scope, version), receive, send)
        if method != "GET":
            return await _refuse(send, MethodNotAllowed(f"{scope['path']} takes GET, not {method}"), allow=b"GET")
        try:
            model = await self.versions.get(version)
        except PredictorError as e:
            return await _refuse(send, e)
        if route == "ready":
            body = {"name": model.name, "ready": model.ready}
        else:
            body = {
                "name": model.name,
                "versions": [model.version],
                "platform": _PLATFORM,
                "inputs": model.get_input_types(),
                "outputs": model.get_output_types(),
            }
        await _respond(send, 200, orjson.dumps(body), self._headers(model))

    async def _other_model(self, name: str, route: str, scope: Scope, send: Callable) -> None:
        """A versioned route of a model this server does not serve: 405 for a wrong method, else 404."""
        method, allowed = scope["method"], "POST" if route == "infer" else "GET"
        if method != allowed:
            return await _refuse(send, MethodNotAllowed(f"{scope['path']} takes {allowed}, not {method}"))
        error = ModelNotServed(f"model {name!r} is not served here; this predictor serves {self.versions.name!r}")
        return await _refuse(send, error)

    def _as_unversioned(self, scope: Scope, version: str | None) -> Scope:
        """A versioned V2 infer call as KServe's unversioned route plus the version header (the data plane
        picks the version from it)."""
        if version is None:
            return scope
        headers = [(k, v) for k, v in scope["headers"] if k != _VERSION_HEADER]
        headers.append((_VERSION_HEADER, version.encode("latin-1")))
        path = self.unversioned_infer
        return {**scope, "path": path, "raw_path": path.encode(), "headers": headers}

    async def _infer(
        self, protocol: str, scope: Scope, receive: Callable, send: Callable, path_version: str | None
    ) -> None:
        started = perf_counter()
        content_type = binary_header = length = header_version = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
            elif key == _BINARY_HEADER:
                binary_header = value
            elif key == _VERSION_HEADER:
                header_version = value
            elif key.startswith(b"ce-"):  # binary-mode CloudEvent: KServe unwraps it
                return await self.app(self._as_unversioned(scope, path_version), receive, send)
        if content_type is not None and content_type.startswith(_CLOUDEVENT):  # structured-mode CloudEvent
            return await self.app(self._as_unversioned(scope, path_version), receive, send)
        # The default is never unloaded, so it is taken at once; another version only after the body is
        # read, so that nothing yields to the loop between taking it and queueing its rows (see _versions).
        model = version = None
        try:
            if path_version is not None:
                version = path_version
            elif header_version is not None and header_version != self._default_version:
                version = requested_version(header_version.decode("latin-1"))
            if version is None:
                model = self.default
            if binary_header is None and content_type is not None and not is_json(content_type):
                raise UnsupportedMediaType(
                    f"content-type {content_type.decode('latin-1')!r} is not JSON; send application/json "
                    "(or binary tensors with the inference-header-content-length header)"
                )
            body = await self._body(receive, length)
            if version is not None:  # else model is the default
                model = self.versions.lookup(version) or await self.versions.load(version)
            assert model is not None
            payload, headers = await self.handlers[protocol](model, body, binary_header)
        except PredictorError as e:
            status = status_of(e)
            if status >= 500 and not isinstance(e, VersionUnavailable):  # a failed load was logged once, when it failed
                log.error("inference failed: %s", e)
            if model is None or model.metrics is None:  # refused before a version was chosen: no series for an
                return await _respond(send, status, error_body(e))  # unknown version label
            model.metrics.requests(protocol, status).inc()
            return await _respond(send, status, error_body(e), self._headers(model))
        except request_body.Disconnected:
            return  # the client left mid-body: no one to answer
        except Exception as e:  # a bug: nothing was sent yet; answer 500 with a generic body, log the traceback once
            log.exception("inference failed unexpectedly")
            if model is not None and model.metrics is not None:
                model.metrics.requests(protocol, 500).inc()
            return await _respond(send, 500, error_body(e))
        await _respond(send, 200, payload, headers)
        metrics = model.metrics
        if metrics is not None:  # a version answers only once loaded, and a loaded version has metrics
            metrics.requests(protocol, 200).inc()
            metrics.request_seconds[protocol].observe(perf_counter() - started)

    def _headers(self, model: OnnxModel) -> list:
        """JSON content type and the version header, built once per version."""
        headers = self._json_headers.get(model.version)
        if headers is None:
            headers = [(b"content-type", _JSON), (_VERSION_HEADER, model.version.encode())]
            self._json_headers[model.version] = headers
        return headers

    async def _v1(self, model: OnnxModel, body: bytes, binary_header: bytes | None) -> tuple[bytes, list]:
        out = await model.infer(parse_v1(_parse(body), model.loaded_spec().dim))
        return orjson.dumps({"predictions": out}, option=_NUMPY), self._headers(model)

    async def _v2(self, model: OnnxModel, body: bytes, binary_header: bytes | None) -> tuple[bytes, list]:
        spec = model.loaded_spec()
        if binary_header is None:
            request = parse_v2(_parse(body), spec)
        else:
            request = parse_v2_binary(body, binary_header, spec)
        out = await model.infer(request.rows)
        output: dict[str, Any] = {"name": spec.output_name, "shape": out.shape, "datatype": "FP32"}
        response = {
            "model_name": model.name,
            "model_version": model.version,
            "id": request.request_id or str(uuid.uuid4()),
            "outputs": [output],
        }
        if not request.binary_output:
            output["data"] = out.ravel()
            return orjson.dumps(response, option=_NUMPY), self._headers(model)
        raw = out.astype("<f4", copy=False).tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
        head = orjson.dumps(response)
        version_header = self._headers(model)[1]
        return head + raw, [(b"content-type", _OCTET_STREAM), (_BINARY_HEADER, str(len(head)).encode()), version_header]

    async def _body(self, receive: Callable, length: bytes | None) -> bytes:
        return await request_body.read_body(receive, length, self.max_body_bytes, "FLYWHEEL_PREDICTOR_MAX_BODY_BYTES",
                                    PayloadTooLarge)

    async def _metrics(self, scope: Scope, send: Callable) -> None:
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


async def _refuse(send: Callable, error: PredictorError, allow: bytes | None = None) -> None:
    """The error in the family's JSON; a 405 names the methods the route takes in `Allow` (RFC 9110)."""
    headers = [*_JSON_HEADERS, (b"allow", allow)] if allow else _JSON_HEADERS
    await _respond(send, status_of(error), error_body(error), headers)


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
