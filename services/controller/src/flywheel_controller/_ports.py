"""The plug-in points the reconciler talks through, as small Protocols.

Each has one module per implementation and a do-nothing (or in-memory) one for tests:
- RolloutStore: where ModelRollouts live (the API server in a cluster, YAML files locally).
- TrafficRouter: who moves traffic (the router's admin API; Nop for dry runs).
- MetricProvider: who measures a metric over an interval (router stats, drift verdicts, PromQL).
- Elector: who may act (a Lease in a cluster; always-leader locally).
- GateSource: what the model repository says of a candidate's gates (`_gates_repo`; none: no check).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from flywheel_contracts import MetricSpec, ModelRollout, ModelRolloutStatus, Route

from ._types import CandidateGates, DesiredRoute, Event, Observation


class StoreError(Exception):
    """The store could not be read or written (API server down, RBAC, a file unreadable)."""


class ConflictError(StoreError):
    """A write was based on a stale resourceVersion: read again and decide again."""


class RolloutStore(Protocol):
    async def list(self) -> list[ModelRollout]:
        """Every ModelRollout this controller is responsible for (its namespace, or its files)."""
        ...

    def changes(self) -> AsyncIterator[str]:
        """Keys (namespace/name) of rollouts that changed (watch events), forever; reconnects by itself."""
        ...

    async def get(self, namespace: str, name: str) -> ModelRollout | None:
        ...

    async def write_status(self, rollout: ModelRollout, status: ModelRolloutStatus) -> ModelRollout:
        """Store `status` (everything but `intent`, which only people write) and return the updated object."""
        ...

    async def set_finalizer(self, rollout: ModelRollout, present: bool) -> ModelRollout:
        """Add or remove flywheel_contracts.FINALIZER (idempotent)."""
        ...

    async def post_event(self, rollout: ModelRollout, event: Event) -> None:
        """Best effort: a failure is logged by the caller, never retried forever."""
        ...


class TrafficRouter(Protocol):
    async def get_route(self, model: str) -> Route | None:
        """The route the router holds for `model` (None: none yet). Raises TrafficError when unreachable."""
        ...

    async def set_route(self, model: str, desired: DesiredRoute) -> Route:
        """Make the router's route for `model` match `desired` (read, compare, write with the generation
        read; re-read and retry on a 409). Idempotent: no write when it already matches."""
        ...


class TrafficError(Exception):
    """The router could not be read or written (down, 401, refused the route)."""


class MetricProvider(Protocol):
    async def measure(
        self, rollout: ModelRollout, metrics: list[MetricSpec], since: datetime | None, now: datetime
    ) -> list[Observation]:
        """One Observation per metric for the interval (since, now]; never raises: a metric it cannot
        measure comes back with `error` set (and is Inconclusive)."""
        ...

    async def forget(self, rollout_key: str) -> None:
        """Drop any baseline kept for the rollout (it ended or was deleted)."""
        ...


class GateSource(Protocol):
    async def candidate_gates(self, model: str, version: str) -> CandidateGates | None:
        """The verdict of `version`'s gates (None: not checked); never raises: a version it cannot read is
        "unverified" with the reason."""
        ...


class Elector(Protocol):
    @property
    def is_leader(self) -> bool:
        ...

    async def run(self) -> None:
        """Acquire and renew leadership forever (a Lease); flips is_leader as it is won or lost."""
        ...

    async def release(self) -> None:
        """Give leadership up at shutdown so another replica takes over at once."""
        ...
