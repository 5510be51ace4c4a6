"""Moving traffic: the router's admin API as a `_ports.TrafficRouter`, and an in-memory one for dry runs.

The router (services/router, `_admin.py`) stores one `flywheel_contracts.Route` per model behind optimistic
concurrency: a writer sends the `generation` it read (0 to create), the router stores generation + 1 and
refuses a stale one with 409. `set_route` is therefore read, compare, write: the engine hands the reconciler
the route it wants on every reconcile (level-triggered), so an unchanged route must cost a GET and no write,
and a write that raced someone else's (another controller replica, a person with the token) is decided again
from a fresh read.

The wanted Route is validated here with the router's own model, so a route the router would refuse (a
weight without a candidate, a malformed header name) fails before any request, with the same field names
and messages the router's 400 would give; a 400 that still comes back is passed on with the router's text.

One HTTP client per object, made on first use and kept: building a client loads the CA bundle (~0.1 s of
CPU on the event loop), which at a hundred rollouts reconciled every few seconds starved every other
reconcile. The route read at the start of a reconcile is reused by the write that follows it (for RECENT_S),
so an unchanged route costs one GET per reconcile, not two.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from pydantic import ValidationError

from flywheel_contracts import Route

from ._http import KeptClient
from ._ports import TrafficError
from ._types import DesiredRoute

TOKEN_SETTING = "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE"
"""Where a person sets the router's admin token file; named in every message about the token."""
CONFLICT_TRIES = 3
"""Writes refused as stale (409) before giving up: each retry starts from a fresh read, so only a route that
keeps changing under the controller (two controllers fighting, a person's script in a loop) exhausts them."""
RECENT_S = 1.0
"""How long a route just read stands in for a fresh read in `set_route` (a 409 always re-reads)."""
CONFLICT_DELAY_S = 0.2
"""Pause before a retry after a 409, times the attempt number: the router replica answering the re-read may
apply the other writer's route up to a second late (its route source is polled or watched)."""


def read_token(path: Path | None) -> str:
    """The router's admin token, read now (the Secret behind the file rotates). TrafficError when unusable."""
    if path is None:
        raise TrafficError(f"no router admin token file is configured ({TOKEN_SETTING}): the router refuses every "
                           "admin request without its bearer token")
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise TrafficError(f"cannot read the router token file {path} ({TOKEN_SETTING}): {e.strerror or e}") from e
    if not token:
        raise TrafficError(f"the router token file {path} ({TOKEN_SETTING}) is empty")
    return token


def describe_failure(e: httpx.HTTPError) -> str:
    """A transport failure as a person reads it: the kind (ConnectError, ReadTimeout) and the cause."""
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def router_message(response: httpx.Response) -> str:
    """The `error` of a Flywheel JSON error body, else the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return response.text[:300] or f"HTTP {response.status_code} without a body"


def _endpoint(version: str | None, endpoint: str | None, current: Route | None) -> str | None:
    """The endpoint to write for `version`: the rollout's own, else the one the router already holds for that
    version (a rollout that names no endpoint must not erase one a person or the chart set)."""
    if endpoint is not None or current is None or version is None:
        return endpoint
    for backend in (current.stable, current.candidate):
        if backend is not None and backend.version == version:
            return backend.endpoint
    return None


def wanted_route(model: str, desired: DesiredRoute, generation: int, current: Route | None = None) -> Route:
    """The Route the router should hold, carrying the generation the write is based on.

    Built from the JSON form, so a validation error names the fields the way the router's 400 does."""
    document: dict = {
        "model": model,
        "generation": generation,
        "stable": {"version": desired.stable_version,
                   "endpoint": _endpoint(desired.stable_version, desired.stable_endpoint, current)},
        "candidateWeight": desired.candidate_weight,
        "shadowPercent": desired.shadow_percent,
        "previewHeader": desired.preview_header,
    }
    if desired.candidate_version is not None:
        document["candidate"] = {"version": desired.candidate_version,
                                 "endpoint": _endpoint(desired.candidate_version, desired.candidate_endpoint, current)}
    if desired.sticky_header is not None or desired.sticky_cookie is not None:
        document["stickiness"] = {"header": desired.sticky_header, "cookie": desired.sticky_cookie}
    try:
        return Route.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in err['loc']) or 'route'}': {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise TrafficError(f"the router would refuse the route for model '{model}': {problems}") from e


def same_route(a: Route, b: Route) -> bool:
    """Equal as traffic goes: the generation and the router's updatedAt stamp are bookkeeping."""
    blank = {"generation": 0, "updated_at": None}
    return a.model_copy(update=blank) == b.model_copy(update=blank)


class RouterAdminTraffic:
    """The router's admin API (port 8001, bearer token) as a TrafficRouter."""

    def __init__(
        self,
        base_url: str,
        token_file: Path | None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        *,
        conflict_delay: float = CONFLICT_DELAY_S,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"router admin URL {base_url!r}: expected http[s]://host:port")
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.transport = transport
        self.timeout = timeout
        self.conflict_delay = conflict_delay
        self._kept = KeptClient(transport, timeout, verify)
        self._recent: dict[str, tuple[float, Route | None]] = {}

    async def aclose(self) -> None:
        await self._kept.aclose()

    async def get_route(self, model: str) -> Route | None:
        route = await self._get(self._client(), model)
        self._recent[model] = (time.monotonic(), route)
        return route

    async def set_route(self, model: str, desired: DesiredRoute) -> Route:
        wanted_route(model, desired, 0)  # refuse a route the router would refuse before any request
        last = ""
        client = self._client()
        for attempt in range(1, CONFLICT_TRIES + 1):
            read_at, current = self._recent.pop(model, (0.0, None))
            if attempt > 1 or time.monotonic() - read_at > RECENT_S:
                current = await self._get(client, model)
            wanted = wanted_route(model, desired, current.generation if current else 0, current)
            if current is not None and same_route(current, wanted):
                return current
            response = await self._send(client, "PUT", model, wanted.to_json())
            if response.status_code in (200, 201):
                return self._parse(response, model)
            if response.status_code != 409:
                raise self._refused(response, "PUT", model)
            last = router_message(response)
            if attempt < CONFLICT_TRIES:
                await asyncio.sleep(self.conflict_delay * attempt)
        raise TrafficError(
            f"the route for model '{model}' kept changing while the controller wrote it: {CONFLICT_TRIES} writes "
            f"were refused as stale (409; last: {last}). Is another controller or a script writing it?"
        )

    # -- HTTP ------------------------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        return self._kept.client()

    def _url(self, model: str) -> str:
        return f"{self.base_url}/v1/routes/{model}"

    async def _get(self, client: httpx.AsyncClient, model: str) -> Route | None:
        response = await self._send(client, "GET", model)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(response, "GET", model)
        return self._parse(response, model)

    async def _send(
        self, client: httpx.AsyncClient, method: str, model: str, body: dict | None = None
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {read_token(self.token_file)}"}
        try:
            return await client.request(method, self._url(model), json=body, headers=headers)
        except httpx.HTTPError as e:
            raise TrafficError(f"cannot reach the router at {self.base_url}: {describe_failure(e)}") from e

    def _refused(self, response: httpx.Response, method: str, model: str) -> TrafficError:
        message = router_message(response)
        if response.status_code == 401:
            return TrafficError(f"the router refused the controller's token ({TOKEN_SETTING}): {message}")
        if response.status_code == 400:
            return TrafficError(f"the router refused the route for model '{model}': {message}")
        return TrafficError(f"the router answered {response.status_code} to {method} {self._url(model)}: {message}")

    def _parse(self, response: httpx.Response, model: str) -> Route:
        try:
            return Route.model_validate_json(response.content)
        except ValidationError as e:
            raise TrafficError(
                f"the router at {self.base_url} answered with something that is not a route for model '{model}': "
                f"{e.errors()[0]['msg']}"
            ) from e


class NopTraffic:
    """Routes kept in memory, with the router's semantics (validation, generation, no write when unchanged):
    for dry runs, local runs without a router, and tests of whoever moves traffic."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.writes = 0  # routes stored, so a test can see an unchanged route was not written again

    async def get_route(self, model: str) -> Route | None:
        return self.routes.get(model)

    async def set_route(self, model: str, desired: DesiredRoute) -> Route:
        current = self.routes.get(model)
        generation = current.generation if current else 0
        wanted = wanted_route(model, desired, generation, current)
        if current is not None and same_route(current, wanted):
            return current
        stored = wanted.model_copy(update={"generation": generation + 1, "updated_at": datetime.now(timezone.utc)})
        self.routes[model] = stored
        self.writes += 1
        return stored
