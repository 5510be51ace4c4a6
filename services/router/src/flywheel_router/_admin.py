"""The admin port: routes and statistics, for the rollout controller and operators with the token.

Every request needs `Authorization: Bearer <token>` (the token file of FLYWHEEL_ROUTER_TOKEN_FILE, a
mounted Secret, re-read when it changes so a rotated Secret takes effect without a restart); without a
configured token the API refuses everything. Nothing here is readable without the token: stats reveal
traffic and routes reveal what is being tested.

- `GET /v1/routes` -> `{"routes": [route, ...]}`
- `GET /v1/routes/{model}` -> the route (404 when none)
- `PUT /v1/routes/{model}` -> store a route (flywheel_contracts.Route JSON; `generation` = the one read,
  0 to create): 200 with the stored route (its new generation), 201 when created, 409 when stale, 400
  naming each wrong field. Every replica applies it within a second.
- `GET /v1/stats/{model}` -> flywheel_contracts.RouterStats of this replica (cumulative; take deltas).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

import orjson
from pydantic import ValidationError

from flywheel_contracts import Route
from flywheel_contracts.auth import Check, TokenFile, unauthorized_body
from flywheel_contracts.body import Disconnected

from ._errors import BadRequest, MethodNotAllowed, NotFound, RouterError, Unauthorized, UnsupportedMediaType
from ._http import Tracked, read_body, respond_error, respond_json, respond_unexpected
from ._proxy import InferenceApp
from ._store import RouteSource

log = logging.getLogger("flywheel_router.admin")

ADMIN_BODY_LIMIT = 64 * 1024


class AdminApp:
    def __init__(self, token: TokenFile, source: RouteSource, inference: InferenceApp) -> None:
        self.token = token
        self.source = source
        self.inference = inference
        self.started_at = datetime.now(timezone.utc)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        send = Tracked(send)
        try:
            self._authenticate(scope)
            await self._dispatch(scope, receive, send)
        except RouterError as e:
            extra = [(b"www-authenticate", b'Bearer realm="flywheel-router"')] if isinstance(e, Unauthorized) else None
            await respond_error(send, e, extra)
        except Disconnected:
            return  # the client left mid-body: no one to answer
        except Exception as e:
            await respond_unexpected(send, e, scope)

    def _authenticate(self, scope: dict) -> None:
        result = self.token.check(scope["headers"])
        if result is not Check.OK:
            raise Unauthorized(unauthorized_body(result, self.token, "FLYWHEEL_ROUTER_TOKEN_FILE")["error"])

    async def _dispatch(self, scope: dict, receive: Callable, send: Callable) -> None:
        path, method = scope["path"], scope["method"]
        parts = path.strip("/").split("/")
        if parts == ["v1", "routes"]:
            _allow(method, ("GET",), path)
            routes = self.inference.table.routes
            return await respond_json(send, 200, {"routes": [c.route.to_json() for c in routes.values()]})
        if len(parts) == 3 and parts[:2] == ["v1", "routes"]:
            model = parts[2]
            _allow(method, ("GET", "PUT"), path)
            if method == "GET":
                compiled = self.inference.table.get(model)
                if compiled is None:
                    raise NotFound(f"no route for model '{model}': PUT one to /v1/routes/{model}")
                return await respond_json(send, 200, compiled.route.to_json())
            route = _parse_route(await self._json_body(scope, receive), model)
            stored = await self.source.put(route)
            log.info(
                "route %s generation %d: stable %s, candidate %s at %g%%, shadow %g%%",
                model,
                stored.generation,
                stored.stable.version,
                stored.candidate.version if stored.candidate else "-",
                stored.candidate_weight,
                stored.shadow_percent,
            )
            return await respond_json(send, 201 if stored.generation == 1 else 200, stored.to_json())
        if len(parts) == 3 and parts[:2] == ["v1", "stats"]:
            _allow(method, ("GET",), path)
            stats = self.inference.stats.get(parts[2])
            if stats is None:
                raise NotFound(f"no statistics for model '{parts[2]}': it has no route on this replica")
            snapshot = stats.snapshot(self.inference.settings.replica_name, self.started_at)
            return await respond_json(send, 200, snapshot.to_json())
        raise NotFound(f"no admin route {path}: /v1/routes, /v1/routes/{{model}}, /v1/stats/{{model}}")

    async def _json_body(self, scope: dict, receive: Callable) -> object:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            raise UnsupportedMediaType(f"content-type {content_type.decode('latin-1')!r}: send application/json")
        body = await read_body(receive, headers.get(b"content-length"), ADMIN_BODY_LIMIT, "64 KiB for a route")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from e


def _parse_route(document: object, model: str) -> Route:
    if not isinstance(document, dict):
        raise BadRequest("a route is a JSON object (see flywheel_contracts.Route)")
    if document.get("model", model) != model:
        raise BadRequest(f"'model' is {document.get('model')!r} but the path names '{model}'")
    document = {**document, "model": model}
    document.pop("updatedAt", None)
    try:
        return Route.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in err['loc']) or 'route'}': {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise BadRequest(f"invalid route: {problems}") from e


def _allow(method: str, allowed: tuple[str, ...], path: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{path} takes {' or '.join(allowed)}, not {method}", allowed)
