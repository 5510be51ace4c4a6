"""The `configmap` route source: one ConfigMap in the release's namespace, watched through the Kubernetes API.

Every router replica follows the same ConfigMap, so a route written through any replica's admin API reaches
all of them (within a second: a watch, not a poll) and survives restarts. Its `data` holds one key per model,
`<model>.json`, whose value is the route's JSON (`Route.to_json()`), written only by the router. A key
`<model>.stable` holds a bare version: that model's route (stable only, generation 0) until a `<model>.json`
is written. The chart renders those from `router.routes` and never the `.json` keys, so `helm upgrade` and
`helm rollback`, which merge only what the chart renders, cannot revert or delete a route the router wrote.
Other keys are ignored; a value that is not a valid route is logged (once per resourceVersion) and skipped
while the other routes apply.

It talks to the API server with plain `httpx` (list, watch, get, update on one ConfigMap: four REST calls)
rather than a Kubernetes client library, which would triple the router image for those calls. It
authenticates with the pod's service account token, re-read from its file on every request because the
kubelet rotates it, and trusts the API server's CA from the service account mount.

`run` follows client-go's reflector: list (the ConfigMap by a `metadata.name` field selector, so the list's
resourceVersion is current even when the ConfigMap has not changed for hours), apply, watch from that
resourceVersion with bookmarks; a watch the server ends cleanly is re-opened from the last resourceVersion,
one that fails or answers 410 Gone is re-listed, with a backoff capped at 1 s. A missing ConfigMap is a
misconfiguration: it is logged, nothing is applied (the router stays unready), and the watch picks the
ConfigMap up the moment it is created.

`put` is read-check-write: the writer's generation against the stored one (Conflict when stale), then an
update carrying the ConfigMap's resourceVersion, so the API server refuses (409) a write that raced another
replica's; that one is retried once from the read, then reported as Conflict.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import ValidationError

from flywheel_contracts import Route

from ._errors import ConfigError, Conflict, RouteSourceError
from ._store import Apply

if TYPE_CHECKING:
    from ._config import Settings

log = logging.getLogger("flywheel_router.routes")

KEY_SUFFIX = ".json"
"""`<model>.json`: a route the router wrote."""
STABLE_SUFFIX = ".stable"
"""`<model>.stable`: the model's stable version until a route is written (the chart's router.routes)."""
REQUEST_TIMEOUT_S = 10.0
"""List, get and update calls (s)."""
WATCH_TIMEOUT_S = 300
"""The server ends each watch after this long (s), so a silently dead connection is noticed; re-opened at once."""
WATCH_READ_TIMEOUT_S = WATCH_TIMEOUT_S + 30.0
"""Silence on a watch longer than this (s) means the connection is gone (bookmarks and the server's own
timeout come sooner)."""
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 1.0
"""Retry delays double from the initial one up to this cap, so a change is applied within about 1 s of the
API server being reachable again."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class ConfigMapRouteSource:
    def __init__(
        self,
        *,
        api_url: str,
        namespace: str,
        name: str,
        token_file: Path,
        ca_file: Path | None,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.token_file = Path(token_file)
        self.backoff_max_s = backoff_max_s
        self.where = f"ConfigMap {namespace}/{name}"
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except OSError as e:
                raise ConfigError(
                    f"Config 'FLYWHEEL_ROUTER_KUBE_CA_FILE' has value '{ca_file}': expected a readable CA bundle "
                    f"({e.strerror or e})"
                ) from e
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"), verify=verify, transport=transport, timeout=REQUEST_TIMEOUT_S
        )
        self._collection = f"/api/v1/namespaces/{namespace}/configmaps"
        self._path = f"{self._collection}/{name}"
        self._applied_rv: str | None = None  # resourceVersion last handed to apply
        self._logged_rv: str | None = None  # resourceVersion whose bad routes were logged
        self._missing_logged = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfigMapRouteSource:
        """The source the FLYWHEEL_ROUTER_KUBE_* settings describe; inside a pod the defaults find the API
        server, the namespace, the token and the CA by themselves."""
        namespace = settings.kube_namespace
        if namespace is None:
            ns_file = settings.kube_token_file.parent / "namespace"
            try:
                namespace = ns_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"Config 'FLYWHEEL_ROUTER_KUBE_NAMESPACE' is unset and {ns_file} cannot be read "
                    f"({e.strerror}): expected the namespace of ConfigMap {settings.kube_configmap}"
                ) from e
        api_url = settings.kube_api_url
        if api_url is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
            if not host or not port:
                raise ConfigError(
                    "Config 'FLYWHEEL_ROUTER_KUBE_API_URL' is unset and KUBERNETES_SERVICE_HOST/PORT are not in "
                    "the environment (not in a pod): expected the API server's URL, e.g. https://127.0.0.1:6443"
                )
            api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(
            api_url=api_url,
            namespace=namespace,
            name=settings.kube_configmap,
            token_file=settings.kube_token_file,
            ca_file=settings.kube_ca_file,
        )

    # -- RouteSource -----------------------------------------------------------------------------------
    async def run(self, apply: Apply) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_INITIAL_S
        resource_version: str | None = None  # where the next watch starts; None: list first
        problem: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list(apply)
                started = loop.time()
                resource_version = await self._watch(apply, resource_version)
                if problem is not None:
                    log.info("%s: following it again", self.where)
                    problem = None
                if loop.time() - started < BACKOFF_MAX_S:
                    # A watch the server ends at once (a proxy's timeout, say) must not become a busy loop.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                else:
                    backoff = BACKOFF_INITIAL_S
            except _Gone:
                resource_version = None  # expired: a fresh list gives a current one
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never end the follower: the routes in force stay until the next load
                message = str(e) if isinstance(e, RouteSourceError) else f"{self.where}: {type(e).__name__}: {e}"
                if message != problem:
                    log.error("%s; keeping the routes in force, retrying", message)
                    problem = message
                resource_version = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)

    async def put(self, route: Route) -> Route:
        for attempt in (1, 2):
            configmap = await self._get()
            data = dict(configmap.get("data") or {})
            current = _stored_generation(data.get(route.model + KEY_SUFFIX))
            if route.generation != current:
                raise Conflict(
                    f"route '{route.model}' is at generation {current}, the write was based on {route.generation}: "
                    "read it again and re-apply the change"
                )
            stored = route.model_copy(update={"generation": current + 1, "updated_at": datetime.now(timezone.utc)})
            data[route.model + KEY_SUFFIX] = orjson.dumps(stored.to_json()).decode()
            configmap["data"] = data
            response = await self._request("PUT", self._path, json=configmap)
            if response.status_code == 409:
                if attempt == 1:
                    continue  # another replica wrote in between: check the generation again
                raise Conflict(
                    f"route '{route.model}': {self.where} changed during the write twice in a row; read the route "
                    "again and re-apply the change"
                )
            self._raise_for(response, "update")
            return stored
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- API calls -------------------------------------------------------------------------------------
    async def _list(self, apply: Apply) -> str:
        """List the ConfigMap by name, apply it if present; the list's resourceVersion, to watch from."""
        response = await self._request("GET", self._collection, params=self._selector())
        self._raise_for(response, "list")
        body = response.json()
        items = body.get("items") or []
        if items:
            self._missing_logged = False
            self._apply(apply, items[0])
        elif self._applied_rv is not None:
            # Deleted while no watch was open: the same as the DELETED event it missed.
            self._deleted(apply, "")
        else:
            # Never loaded: no apply, so the router stays unready rather than serve "no routes" because of a
            # wrong name; the watch below applies the ConfigMap the moment it is created.
            if not self._missing_logged:
                log.error(
                    "%s does not exist: create it (the chart does) or fix FLYWHEEL_ROUTER_KUBE_CONFIGMAP; "
                    "no routes loaded, waiting for it",
                    self.where,
                )
                self._missing_logged = True
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, apply: Apply, resource_version: str) -> str:
        """Follow the ConfigMap from resource_version until the server ends the watch; the last resourceVersion."""
        params = {
            **self._selector(),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=WATCH_READ_TIMEOUT_S)
        try:
            async with self._client.stream(
                "GET", self._collection, params=params, headers=self._auth(), timeout=timeout
            ) as response:
                if response.status_code == 410:
                    raise _Gone
                if response.status_code != 200:
                    await response.aread()
                    self._raise_for(response, "watch")
                async for line in response.aiter_lines():
                    if line.strip():
                        resource_version = self._event(apply, orjson.loads(line), resource_version)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        except orjson.JSONDecodeError as e:
            raise RouteSourceError(f"{self.where}: the watch sent a line that is not JSON ({e})") from e
        return resource_version

    def _event(self, apply: Apply, event: Mapping[str, Any], resource_version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise RouteSourceError(f"{self.where}: the watch failed ({obj.get('code')}): {obj.get('message')}")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind in ("ADDED", "MODIFIED"):
            self._apply(apply, obj)
        elif kind == "DELETED":
            self._deleted(apply, rv)
        return rv  # BOOKMARK: only the resourceVersion moves

    def _deleted(self, apply: Apply, rv: str) -> None:
        if (self._applied_rv or "").startswith("deleted:"):
            return  # already routing with none
        log.error("%s was deleted: routing with no routes until it is created again", self.where)
        self._applied_rv = f"deleted:{rv}"
        apply({})

    async def _get(self) -> dict[str, Any]:
        response = await self._request("GET", self._path)
        if response.status_code == 404:
            raise RouteSourceError(
                f"{self.where} does not exist: create it (the chart does) or fix FLYWHEEL_ROUTER_KUBE_CONFIGMAP"
            )
        self._raise_for(response, "get")
        return response.json()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, headers=self._auth(), **kwargs)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e

    # -- helpers ---------------------------------------------------------------------------------------
    def _selector(self) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self.name}"}

    def _auth(self) -> dict[str, str]:
        try:
            token = self.token_file.read_text().strip()
        except OSError as e:
            raise RouteSourceError(
                f"{self.where}: cannot read the service account token {self.token_file} ({e.strerror}); "
                "check FLYWHEEL_ROUTER_KUBE_TOKEN_FILE and that the pod mounts its token"
            ) from e
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _unreachable(self, error: httpx.HTTPError) -> RouteSourceError:
        return RouteSourceError(
            f"{self.where}: the API server at {self._client.base_url} is unreachable ({type(error).__name__}: {error})"
        )

    def _raise_for(self, response: httpx.Response, verb: str) -> None:
        status = response.status_code
        if status < 300:
            return
        try:
            detail = response.json().get("message") or response.text
        except ValueError:
            detail = response.text
        detail = str(detail)[:300]
        if status == 401:
            hint = "the API server refused the service account token; check FLYWHEEL_ROUTER_KUBE_TOKEN_FILE"
        elif status == 403:
            hint = (
                f"the router's ServiceAccount lacks the RBAC verb '{verb}' on configmaps '{self.name}' in namespace "
                f"'{self.namespace}' (the chart's <release>-router Role grants get, list, watch, update, patch)"
            )
        elif status == 404:
            hint = "not found"
        else:
            hint = "the API server failed"
        raise RouteSourceError(f"{self.where}: {verb} answered {status}: {hint} ({detail})")

    def _apply(self, apply: Apply, configmap: Mapping[str, Any]) -> None:
        rv = str((configmap.get("metadata") or {}).get("resourceVersion") or "")
        if rv and rv == self._applied_rv:
            return  # a re-list of what is already in force
        routes = self._parse(configmap.get("data") or {}, rv)
        self._applied_rv = rv
        apply(routes)

    def _parse(self, data: Mapping[str, str], rv: str) -> dict[str, Route]:
        routes: dict[str, Route] = {}
        defaults: dict[str, Route] = {}
        problems: list[str] = []
        for key, value in sorted(data.items()):
            if key.endswith(KEY_SUFFIX):
                model, stable = key[: -len(KEY_SUFFIX)], False
            elif key.endswith(STABLE_SUFFIX):
                model, stable = key[: -len(STABLE_SUFFIX)], True
            else:
                continue
            try:
                if stable:
                    route = Route.model_validate({"model": model, "stable": {"version": value.strip()}})
                else:
                    route = Route.model_validate_json(value)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "the value"
                problems.append(f"key '{key}' is not a valid route ({where}: {first['msg']})")
                continue
            if route.model != model:
                problems.append(f"key '{key}' holds the route of model '{route.model}'")
                continue
            (defaults if stable else routes)[model] = route
        for model, route in defaults.items():
            routes.setdefault(model, route)  # a written route wins over the chart's stable version
        if problems and rv != self._logged_rv:
            log.error("%s (resourceVersion %s): skipped %s", self.where, rv, "; ".join(problems))
        self._logged_rv = rv
        return routes


def _stored_generation(value: str | None) -> int:
    """The generation of a stored route value; 0 when there is none (an unreadable value can be replaced by a
    writer that creates: it never served)."""
    if value is None:
        return 0
    try:
        return Route.model_validate_json(value).generation
    except ValidationError:
        return 0
