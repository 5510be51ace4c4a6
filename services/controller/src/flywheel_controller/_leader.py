"""Leader election over a coordination.k8s.io/v1 Lease, so that of several controller replicas one acts.

The protocol is client-go's: the Lease names its holder and when it last renewed; a replica takes it when it
is missing (create), free (holderIdentity ""), expired (renewTime + leaseDurationSeconds in the past) or its
own. Every write is an update carrying the resourceVersion read, so when two replicas race the API server lets
one win and answers the other 409. The leader renews every `renew_seconds`; `is_leader` reads the clock itself
and turns False once `lease_seconds - renew_seconds` have passed since the last successful renewal, even while a
renewal is still hanging, so a replica never acts on a lease another one may already have taken. Expiry is
judged against the holder's renewTime, so the replicas' clocks are assumed to agree (NTP) to well within that
margin.

`release()` at shutdown frees the Lease (holderIdentity "", leaseDurationSeconds 1) so a standby takes over
within one renew period instead of waiting out the lease. `AlwaysLeader` stands in where there is one replica
(local mode, tests).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ._kube import KubeClient, NotFoundError, micro_time
from ._ports import ConflictError, StoreError

log = logging.getLogger("flywheel_controller.leader")


class LeaseElector:
    """`_ports.Elector` over the Lease `namespace/name`, held under `identity` (the pod name)."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 15,
        renew_seconds: float = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError(
                f"renew_seconds ({renew_seconds}) must be above 0 and below lease_seconds ({lease_seconds})"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.clock = clock
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._renewed_at: float | None = None  # clock() when the Lease last became or stayed ours; None: not ours
        self._lease: dict[str, Any] | None = None  # the Lease as last written by us
        self._was_leader = False
        self._problem: str | None = None
        self._released = False

    @property
    def is_leader(self) -> bool:
        if self._renewed_at is None:
            return False
        return self.clock() - self._renewed_at < self.lease_seconds - self.renew_seconds

    async def run(self) -> None:
        while not self._released:
            await self.step()
            await asyncio.sleep(self.renew_seconds)

    async def step(self) -> bool:
        """One attempt to acquire or renew; whether this replica leads afterwards. Never raises StoreError."""
        if self._released:
            return False
        try:
            await self._acquire_or_renew()
            if self._problem is not None:
                log.info("Lease %s/%s: the API server answers again", self.namespace, self.name)
                self._problem = None
        except ConflictError:
            self._renewed_at = None  # another replica wrote the Lease first: it leads
        except StoreError as e:
            if str(e) != self._problem:
                log.warning("Lease %s/%s: %s", self.namespace, self.name, e)
                self._problem = str(e)
        leader = self.is_leader
        if leader != self._was_leader:
            if leader:
                log.info("Lease %s/%s: %s is the leader", self.namespace, self.name, self.identity)
            else:
                log.warning("Lease %s/%s: %s lost leadership, stops acting", self.namespace, self.name, self.identity)
            self._was_leader = leader
        return leader

    async def release(self) -> None:
        """Free the Lease if this replica holds it (best effort: a failure only means the standby waits out the
        lease); this elector never acquires again."""
        self._released = True
        held, lease = self._renewed_at is not None, self._lease
        self._renewed_at = None
        self._was_leader = False
        if not held or lease is None:
            return
        try:
            for attempt in (1, 2):
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return  # another replica holds it already
                free = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(self._now())}
                try:
                    await self.client.request("PUT", self.path, json_body={**lease, "spec": free})
                    log.info("Lease %s/%s: %s released it", self.namespace, self.name, self.identity)
                    return
                except ConflictError:
                    if attempt == 2:
                        raise
                    # A renewal still in flight (release may come before run() is cancelled) moved the
                    # Lease on: read it again and free it if it is still ours.
                    lease = await self.client.request("GET", self.path)
        except StoreError as e:
            log.warning(
                "Lease %s/%s: releasing failed (%s); a standby takes over when it expires", self.namespace, self.name, e
            )

    # -- the protocol ----------------------------------------------------------------------------------
    async def _acquire_or_renew(self) -> None:
        started = self.clock()
        try:
            lease = await self.client.request("GET", self.path)
        except NotFoundError:
            await self._write("POST", None, transitions=0, acquired=True, started=started)
            return
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder == self.identity:
            await self._write(
                "PUT", lease, transitions=spec.get("leaseTransitions") or 0, acquired=False, started=started
            )
            return
        if holder and not self._expired(spec):
            self._renewed_at = None  # held by a live leader: wait
            return
        transitions = (spec.get("leaseTransitions") or 0) + 1
        await self._write("PUT", lease, transitions=transitions, acquired=True, started=started)

    async def _write(
        self, method: str, lease: dict[str, Any] | None, *, transitions: int, acquired: bool, started: float
    ) -> None:
        now = micro_time(self._now())
        spec = dict((lease or {}).get("spec") or {})
        spec.update(
            {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.lease_seconds),
                "renewTime": now,
                "leaseTransitions": transitions,
            }
        )
        if acquired or not spec.get("acquireTime"):
            spec["acquireTime"] = now
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            path = self.path.rsplit("/", 1)[0]
        else:
            body, path = {**lease, "spec": spec}, self.path  # metadata.resourceVersion: the precondition
        self._lease = await self.client.request(method, path, json_body=body)
        if self._released:
            return  # released while this write was in flight (release() is meant to follow cancelling run())
        # Counted from before the read: the Lease is ours from when it was read, never longer.
        self._renewed_at = started

    def _expired(self, spec: dict[str, Any]) -> bool:
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        try:
            at = datetime.fromisoformat(renewed).timestamp() if renewed else 0.0
        except (TypeError, ValueError):
            at = 0.0  # an unreadable time cannot show the holder is alive
        return at + float(spec.get("leaseDurationSeconds") or 0) < self.clock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)


class AlwaysLeader:
    """The only replica: leads from the start until released."""

    def __init__(self) -> None:
        self._leader = True

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def run(self) -> None:
        await asyncio.Event().wait()  # nothing to renew; runs as long as the caller's task does

    async def release(self) -> None:
        self._leader = False
