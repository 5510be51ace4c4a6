"""ModelRollouts of one namespace through the API server: `_ports.RolloutStore` over `_kube.KubeClient`.

`changes()` follows client-go's reflector: watch from the last list's resourceVersion with bookmarks; a watch the
server ends cleanly is re-opened where it was; one that breaks or answers 410 Gone is replaced by a fresh list
whose every key is yielded (whatever changed while no watch was open is reconciled), with a back-off while the
API server is down. Status is written with a JSON merge patch that carries explicit nulls, so a field the
controller clears is deleted, and never `intent`, which only people write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from flywheel_contracts import FINALIZER, ModelRollout, ModelRolloutStatus
from flywheel_contracts.rollout import GROUP, KIND, PLURAL, VERSION

from ._kube import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    EVENT_MESSAGE_MAX,
    WATCH_TIMEOUT_S,
    GoneError,
    KubeClient,
    NotFoundError,
    micro_time,
)
from ._ports import StoreError
from ._types import Event

log = logging.getLogger("flywheel_controller.kube")


class KubeRolloutStore:
    """ModelRollouts of one namespace, through the API server (`_ports.RolloutStore`)."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        *,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.watch_timeout_s = watch_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.collection = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        self.instance = os.environ.get("HOSTNAME") or socket.gethostname()
        self._resource_version: str | None = None  # of the last list: where the next watch starts
        self._invalid_logged: dict[str, str] = {}  # key -> resourceVersion whose invalid object was logged
        self._known: set[str] = set()  # keys listed or watched, not deleted since
        self._vanished: set[str] = set()

    def _path(self, name: str, subresource: str = "") -> str:
        return f"{self.collection}/{name}" + (f"/{subresource}" if subresource else "")

    async def list(self) -> list[ModelRollout]:
        """Every valid ModelRollout of the namespace; one that does not validate is logged (once per
        resourceVersion) and skipped, so one bad object cannot stop the others."""
        body = await self.client.request("GET", self.collection)
        self._resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        rollouts = []
        listed: set[str] = set()
        for obj in body.get("items") or []:
            key = _key(obj, self.namespace)
            listed.add(key)
            try:
                rollouts.append(self._parse(obj))
            except StoreError as e:
                rv = str((obj.get("metadata") or {}).get("resourceVersion"))
                if self._invalid_logged.get(key) != rv:
                    log.error("%s; skipped", e)
                    self._invalid_logged[key] = rv
        self._vanished = self._known - listed  # deleted while no watch was open: reported by the next re-list
        self._known = listed
        return rollouts

    async def changes(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        backoff = self.backoff_initial_s
        problem: str | None = None
        while True:
            started: float | None = None
            try:
                if self._resource_version is None:
                    await self.list()
                    # Everything listed, and whatever vanished since: a change made while no watch was open
                    # (or a deletion) is reconciled all the same.
                    for key in sorted(self._known | self._vanished):
                        yield key
                    if self._resource_version is None:
                        raise StoreError(f"list {self.collection} answered without a resourceVersion")
                if problem is not None:
                    log.info("watching %s again", self.collection)
                    problem = None
                started = loop.time()
                async with aclosing(self._watch(self._resource_version)) as events:
                    async for key in events:
                        yield key
                if loop.time() - started < 1.0:
                    # A watch the server (or a proxy) ends at once must not become a busy loop.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                else:
                    backoff = self.backoff_initial_s
            except GoneError:
                log.info("the watch of %s expired (410 Gone): listing again", self.collection)
                self._resource_version = None
            except Exception as e:  # never end the follower: list again once the API server answers
                message = str(e) if isinstance(e, StoreError) else f"{self.collection}: {type(e).__name__}: {e}"
                if message != problem:
                    log.warning(
                        "%s; listing again (backing off up to %g s while it fails)", message, self.backoff_max_s
                    )
                    problem = message
                self._resource_version = None
                if started is not None and loop.time() - started >= 1.0:
                    backoff = self.backoff_initial_s  # a watch that ran a while broke: not a failing server
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)

    async def _watch(self, resource_version: str) -> AsyncGenerator[str, None]:
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout_s),
        }
        async with aclosing(self.client.watch(self.collection, params, self.watch_timeout_s)) as events:
            async for event in events:
                obj = event.get("object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self._resource_version = str(rv)  # a re-opened watch starts after what was already yielded
                kind = event.get("type")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    key = _key(obj, self.namespace)
                    (self._known.discard if kind == "DELETED" else self._known.add)(key)
                    yield key

    async def get(self, namespace: str, name: str) -> ModelRollout | None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        try:
            return self._parse(await self.client.request("GET", path))
        except NotFoundError:
            return None

    async def write_status(self, rollout: ModelRollout, status: ModelRolloutStatus) -> ModelRollout:
        body = status.model_dump(mode="json", by_alias=True)
        body.pop("intent", None)
        patch = {"status": _nulls_outside_lists(body)}
        path = self._path(rollout.name, "status")
        return self._parse(await self.client.request("PATCH", path, json_body=patch, merge_patch=True))

    async def set_finalizer(self, rollout: ModelRollout, present: bool) -> ModelRollout:
        finalizers = [f for f in rollout.finalizers if f != FINALIZER]
        if present:
            finalizers.append(FINALIZER)
        if finalizers == list(rollout.finalizers):
            return rollout
        metadata: dict[str, Any] = {"finalizers": finalizers}
        if rollout.resource_version:
            metadata["resourceVersion"] = rollout.resource_version  # the API server refuses (409) a stale base
        body = await self.client.request(
            "PATCH", self._path(rollout.name), json_body={"metadata": metadata}, merge_patch=True
        )
        return self._parse(body)

    async def post_event(self, rollout: ModelRollout, event: Event) -> None:
        involved = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": rollout.name,
                    "namespace": rollout.namespace, "uid": rollout.uid, "resourceVersion": rollout.resource_version}
        await self.client.request("POST", f"/api/v1/namespaces/{rollout.namespace}/events",
                                  json_body=event_body(involved, event, self.instance))

    def _parse(self, obj: dict[str, Any]) -> ModelRollout:
        try:
            return ModelRollout.from_object(obj)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the object"
            raise StoreError(
                f"ModelRollout {_key(obj, self.namespace)} is not valid ({where}: {first['msg']}): fix the object"
            ) from e


def event_body(involved: dict[str, Any], event: Event, instance: str) -> dict[str, Any]:
    """A core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid, resourceVersion), from this
    controller."""
    now = datetime.now(timezone.utc)
    seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message[:EVENT_MESSAGE_MAX],
        "type": event.type,
        "source": {"component": "flywheel-controller"},
        "reportingComponent": "flywheel.dev/controller",
        "reportingInstance": instance,
        # With eventTime set the API server requires an action too (it validates the event as a new-style one).
        "action": "Reconcile",
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": micro_time(now),
        "count": 1,
    }


def _key(obj: Mapping[str, Any], namespace: str) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or namespace}/{meta.get('name', '')}"


def _nulls_outside_lists(value: Any, in_list: bool = False) -> Any:
    """The merge patch of a status: None fields stay as explicit nulls (the patch deletes them) except inside
    lists, which a merge patch replaces whole, so a null there would be stored rather than mean 'delete'."""
    if isinstance(value, dict):
        return {k: _nulls_outside_lists(v, in_list) for k, v in value.items() if not (in_list and v is None)}
    if isinstance(value, list):
        return [_nulls_outside_lists(v, True) for v in value]
    return value
