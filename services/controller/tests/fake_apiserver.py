"""An in-memory Kubernetes API server behind httpx.MockTransport, for the controller's Kubernetes adapters.

It serves what the controller calls, with the semantics the controller relies on: list (with a label
selector), watch from a resourceVersion (ADDED/MODIFIED/DELETED, BOOKMARK, 410 Gone for a compacted one), get,
create (generateName), update with the resourceVersion as a precondition (409), JSON merge patches (a
metadata.resourceVersion in the patch is a precondition too), the status subresource of modelrollouts (a patch
of the object ignores status, one of /status touches nothing else), generation bumped by spec changes only, and
finalizers holding a deletion. Any resource type works (leases, events, endpointslices, ...).

Tests drive it from the other side: `add`, `modify` and `delete` objects as a person would, `bookmark`,
`compact` (old watches answer 410), `end_watches` / `break_watches`, `fail` the next calls with a status,
`down` (connection refused), and read back `requests` and the objects themselves.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flywheel_controller._kube import KubeClient

API_URL = "https://api.test:6443"
NS = "ml"
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)
WITH_STATUS = {"modelrollouts"}  # resources whose status is a subresource


def status_body(code: int, message: str, reason: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def rollout_object(name: str = "fraud-v2", namespace: str = NS, **spec: Any) -> dict[str, Any]:
    """A valid ModelRollout as a person applies it (spec fields override the defaults)."""
    body = {
        "model": "fraud",
        "stable": {"version": "v1"},
        "candidate": {"version": "v2"},
        "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
    }
    body.update(spec)
    return {
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


@dataclass
class Fault:
    method: str | None
    resource: str | None
    status: int | None  # None: the connection fails
    times: int


@dataclass
class _Watch:
    resource: str
    namespace: str
    queue: asyncio.Queue[dict[str, Any] | Exception | None] = field(default_factory=asyncio.Queue)


class _WatchStream(httpx.AsyncByteStream):
    """A watch's body: one JSON line per event until the server ends it; closing it (the client's side) is seen,
    so `open_watches` counts only watches a client still reads."""

    def __init__(self, watch: _Watch, closed: Callable[[_Watch], None]) -> None:
        self.watch = watch
        self.closed = closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await self.watch.queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield json.dumps(item).encode() + b"\n"
        finally:
            self.closed(self.watch)

    async def aclose(self) -> None:
        self.closed(self.watch)


class FakeApiServer:
    def __init__(self) -> None:
        self._rv = itertools.count(1000)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, resource, type, object)
        self.compacted = 0  # a watch from a resourceVersion below this answers 410
        self.requests: list[httpx.Request] = []
        self.faults: list[Fault] = []
        self.down = False
        self._watches: list[_Watch] = []
        self._uids = itertools.count(1)

    # -- the test's side -------------------------------------------------------------------------------
    def client(self, token_file: Path | None = None, **kwargs: Any) -> KubeClient:
        return KubeClient(API_URL, token_file, None, transport=httpx.MockTransport(self), **kwargs)

    def get(self, resource: str, name: str, namespace: str = NS) -> dict[str, Any] | None:
        obj = self.objects.get((resource, namespace, name))
        return copy.deepcopy(obj)

    def list(self, resource: str, namespace: str = NS) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (r, ns, _), o in sorted(self.objects.items()) if r == resource and ns == namespace]

    def add(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._create(resource, obj["metadata"].get("namespace", NS), copy.deepcopy(obj))

    def modify(self, resource: str, name: str, change: Callable[[dict[str, Any]], None], namespace: str = NS) -> dict:
        obj = copy.deepcopy(self.objects[(resource, namespace, name)])
        change(obj)
        return self._store(resource, obj, self.objects[(resource, namespace, name)])

    def delete(self, resource: str, name: str, namespace: str = NS) -> None:
        obj = self.objects[(resource, namespace, name)]
        if obj["metadata"].get("finalizers"):
            updated = copy.deepcopy(obj)
            updated["metadata"]["deletionTimestamp"] = "2026-11-30T12:00:00Z"
            self._store(resource, updated, obj)
        else:
            self._remove(resource, obj)

    def bookmark(self, resource: str = "modelrollouts", namespace: str = NS) -> str:
        rv = str(next(self._rv))
        self._notify(resource, namespace, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv}}})
        return rv

    def compact(self) -> None:
        """Forget the history: a watch from any resourceVersion seen so far answers 410 Gone (on open, and the
        open ones get an ERROR event)."""
        self.compacted = next(self._rv)
        self.history.clear()
        gone = {"type": "ERROR", "object": status_body(410, "too old resource version", "Expired")}
        for watch in self._watches:
            watch.queue.put_nowait(gone)

    def end_watches(self) -> None:
        """The server ends every open watch cleanly (its timeoutSeconds passed)."""
        for watch in self._watches:
            watch.queue.put_nowait(None)

    def break_watches(self) -> None:
        """Every open watch's connection breaks mid-stream."""
        for watch in self._watches:
            watch.queue.put_nowait(httpx.RemoteProtocolError("peer closed connection without sending complete message"))

    def fail(self, status: int | None, method: str | None = None, resource: str | None = None, times: int = 1) -> None:
        """The next `times` calls matching method/resource answer `status` (None: the connection fails)."""
        self.faults.append(Fault(method, resource, status, times))

    def calls(self, method: str | None = None, resource: str | None = None) -> list[httpx.Request]:
        found = []
        for request in self.requests:
            match = PATH.match(request.url.path)
            if (method is None or request.method == method) and (
                resource is None or (match is not None and match["resource"] == resource)
            ):
                found.append(request)
        return found

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    # -- the transport's side --------------------------------------------------------------------------
    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        match = PATH.match(request.url.path)
        resource = match["resource"] if match else None
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        for fault in self.faults:
            if fault.times > 0 and fault.method in (None, request.method) and fault.resource in (None, resource):
                fault.times -= 1
                if fault.status is None:
                    raise httpx.ConnectError("connection refused", request=request)
                return httpx.Response(fault.status, json=status_body(fault.status, f"fake {fault.status}"))
        if match is None:
            return httpx.Response(404, json=status_body(404, "the server could not find the requested resource"))
        ns, name, sub = match["ns"], match["name"], match["sub"]
        body = json.loads(request.content) if request.content else None
        if request.method == "GET" and name is None:
            if request.url.params.get("watch") in ("1", "true"):
                return self._watch(resource, ns, request)
            return self._list(resource, ns, request)
        if request.method == "POST" and name is None:
            existing = body["metadata"].get("name")
            if existing and (resource, ns, existing) in self.objects:
                return httpx.Response(
                    409, json=status_body(409, f'{resource} "{existing}" already exists', "AlreadyExists")
                )
            return httpx.Response(201, json=self._create(resource, ns, body))
        current = self.objects.get((resource, ns, name or ""))
        if current is None:
            return httpx.Response(404, json=status_body(404, f'{resource} "{name}" not found', "NotFound"))
        if request.method == "GET":
            return httpx.Response(200, json=current)
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            return httpx.Response(
                409,
                json=status_body(
                    409,
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    "Conflict",
                ),
            )
        if request.method == "PATCH":
            assert request.headers["content-type"] == "application/merge-patch+json"
            updated = merge_patch(current, body)
        elif request.method == "PUT":
            updated = copy.deepcopy(body)
        else:
            return httpx.Response(405, json=status_body(405, "method not allowed"))
        if resource in WITH_STATUS:
            # The status subresource: a write through it changes only status, any other write never does.
            if sub == "status":
                updated = {**current, "status": updated.get("status")}
            else:
                updated["status"] = current.get("status")
            if updated.get("status") is None:
                updated.pop("status")
        updated["metadata"] = {
            **updated.get("metadata", {}),
            **{
                k: current["metadata"][k]
                for k in ("name", "namespace", "uid", "creationTimestamp", "generation")
                if k in current["metadata"]
            },
        }
        if current["metadata"].get("deletionTimestamp"):
            updated["metadata"]["deletionTimestamp"] = current["metadata"]["deletionTimestamp"]
        return httpx.Response(200, json=self._store(resource, updated, current))

    def _list(self, resource: str, ns: str, request: httpx.Request) -> httpx.Response:
        selector = request.url.params.get("labelSelector")
        items = self.list(resource, ns)
        if selector:
            key, _, value = selector.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(key) == value]
        rv = str(next(self._rv))
        return httpx.Response(200, json={"kind": "List", "metadata": {"resourceVersion": rv}, "items": items})

    def _watch(self, resource: str, ns: str, request: httpx.Request) -> httpx.Response:
        since = int(request.url.params.get("resourceVersion") or 0)
        if since < self.compacted:
            return httpx.Response(410, json=status_body(410, "too old resource version", "Expired"))
        watch = _Watch(resource, ns)
        for rv, res, kind, obj in self.history:
            if rv > since and res == resource and obj["metadata"].get("namespace") == ns:
                watch.queue.put_nowait({"type": kind, "object": obj})
        self._watches.append(watch)
        return httpx.Response(200, stream=_WatchStream(watch, self._closed))

    def _closed(self, watch: _Watch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)

    # -- storage ---------------------------------------------------------------------------------------
    def _create(self, resource: str, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = meta.get("generateName", "") + f"{next(self._uids):05x}"
        meta.update({"namespace": ns, "uid": f"uid-{next(self._uids)}", "creationTimestamp": "2026-11-30T11:00:00Z"})
        if resource in WITH_STATUS:
            meta["generation"] = 1
        return self._store(resource, obj, None)

    def _store(self, resource: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        meta = obj["metadata"]
        if previous is not None and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(resource, previous)
            return obj
        if previous is not None and resource in WITH_STATUS and obj.get("spec") != previous.get("spec"):
            meta["generation"] = previous["metadata"].get("generation", 1) + 1
        rv = next(self._rv)
        meta["resourceVersion"] = str(rv)
        self.objects[(resource, meta["namespace"], meta["name"])] = obj
        kind = "ADDED" if previous is None else "MODIFIED"
        self.history.append((rv, resource, kind, copy.deepcopy(obj)))
        self._notify(resource, meta["namespace"], {"type": kind, "object": obj})
        return copy.deepcopy(obj)

    def _remove(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        del self.objects[(resource, meta["namespace"], meta["name"])]
        rv = next(self._rv)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(rv)
        self.history.append((rv, resource, "DELETED", gone))
        self._notify(resource, meta["namespace"], {"type": "DELETED", "object": gone})

    def _notify(self, resource: str, ns: str, event: dict[str, Any]) -> None:
        for watch in self._watches:
            if watch.resource == resource and watch.namespace == ns:
                watch.queue.put_nowait(copy.deepcopy(event))
