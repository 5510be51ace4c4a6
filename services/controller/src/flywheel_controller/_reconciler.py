"""The thin, idempotent loop around the pure engine: read a rollout, measure when an interval is due, let the
engine decide, then write status, post Events and make the router hold the route the status implies.

Order matters for crash safety: status is written first, the route second, and the route is a function of
spec + status alone (`_engine.desired_route`). A controller killed between the two writes recomputes the same
route on restart, so there is no double step, no weight jump and no double promotion; killed before the status
write, it decides the same step again from the old status.

Scheduling: one due time per rollout (the engine's `requeue_after`, capped by RESYNC), woken early by watch
events; at most MAX_CONCURRENT reconciles at once, never two of the same rollout. Only the leader acts.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from flywheel_contracts import FINALIZER, ModelRollout, Phase

from ._analysis import analyse
from ._engine import analysis_due, reconcile, released_route
from ._gates_repo import NoGateCheck
from ._metrics import Metrics
from ._ports import ConflictError, Elector, GateSource, RolloutStore, StoreError, TrafficError, TrafficRouter
from ._types import Event, RouterView, Tick

log = logging.getLogger("flywheel.controller")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Reconciler:
    def __init__(
        self,
        *,
        store: RolloutStore,
        traffic: TrafficRouter,
        providers: Any,
        elector: Elector,
        metrics: Metrics | None = None,
        clock: Clock = utcnow,
        max_concurrent: int = 16,
        resync_seconds: float = 30.0,
        on_outcome: Callable[[ModelRollout, ModelRollout], None] | None = None,
        gates: GateSource | None = None,
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.providers = providers
        self.elector = elector
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.resync_seconds = resync_seconds
        self.on_outcome = on_outcome  # (before, after): local mode prints progress from it
        self.gates: GateSource = gates or NoGateCheck()  # a rejected candidate is refused before any traffic
        self.ready = False
        self._known: dict[str, ModelRollout] = {}
        self._due: list[tuple[float, str]] = []
        self._due_at: dict[str, float] = {}
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task] = set()

    # -- scheduling ------------------------------------------------------------------------------------
    def schedule(self, key: str, delay: float = 0.0) -> None:
        at = time.monotonic() + max(0.0, delay)
        if self._due_at.get(key, float("inf")) <= at:
            return
        self._due_at[key] = at
        heapq.heappush(self._due, (at, key))
        self._wake.set()

    async def run(self) -> None:
        """List, then reconcile forever; watch events wake a rollout early."""
        while True:
            try:
                rollouts = await self.store.list()
                break
            except StoreError as e:
                self.metrics.errors.labels("store").inc()
                log.warning("cannot list ModelRollouts yet: %s", e)
                await asyncio.sleep(2.0)
        for rollout in rollouts:
            self._known[rollout.key] = rollout
            self.schedule(rollout.key)
        self.metrics.set_phases(list(self._known.values()))
        self.ready = True
        watcher = asyncio.create_task(self._follow_changes())
        try:
            await self._dispatch()
        finally:
            watcher.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _follow_changes(self) -> None:
        async for key in self.store.changes():
            self.schedule(key)

    async def _dispatch(self) -> None:
        was_leader = False
        while True:
            leader = self.elector.is_leader
            self.metrics.leader.set(1 if leader else 0)
            if leader and not was_leader:  # just won: look at everything now
                for key in list(self._known):
                    self.schedule(key)
            was_leader = leader
            now = time.monotonic()
            while leader and self._due and self._due[0][0] <= now:
                at, key = heapq.heappop(self._due)
                if self._due_at.get(key) != at:
                    continue  # superseded by an earlier or later schedule
                del self._due_at[key]
                if key in self._running:
                    self._again.add(key)
                    continue
                self._running.add(key)
                task = asyncio.create_task(self._reconcile_key(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = 0.5 if not leader else (min(1.0, max(0.0, self._due[0][0] - now)) if self._due else 1.0)
            self._wake.clear()
            try:
                # Not asyncio.wait_for: on 3.11 it swallows a cancellation that lands as the wake fires, and
                # the controller then never stops.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _reconcile_key(self, key: str) -> None:
        delay: float | None = self.resync_seconds
        try:
            async with self._slots:
                started = time.perf_counter()
                delay = await self.reconcile_once(key)
                self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        except ConflictError:
            delay = 0.05  # someone else wrote the object: read it again
        except Exception:  # one rollout's failure must not stop the others
            self.metrics.errors.labels("reconcile").inc()
            log.exception("reconciling %s failed; trying again in 5 s", key)
            delay = 5.0
        finally:
            self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                delay = 0.0
            if delay is not None:
                self.schedule(key, min(delay, self.resync_seconds))

    # -- one rollout -----------------------------------------------------------------------------------
    async def reconcile_once(self, key: str) -> float | None:
        """Reconcile one rollout; returns seconds until it should be looked at again (None: it is gone)."""
        namespace, name = key.split("/", 1)
        rollout = await self.store.get(namespace, name)
        if rollout is None:
            self._known.pop(key, None)
            await self.providers.forget(key)
            return None
        self._known[key] = rollout
        if rollout.deletion_timestamp is not None:
            await self._release(rollout)
            return None
        now = self.clock()
        router = await self._router_view(rollout.spec.model)
        analysis = None
        if router.reachable and analysis_due(rollout, now):
            status = rollout.status
            since = status.last_analysis.time if status.last_analysis else (status.step_started_at or status.started_at)
            observations = await self.providers.measure(rollout, since, now)
            analysis = analyse(
                rollout.spec.analysis, observations, list(status.evidence), now=now,
                step=status.current_step_index, previous=status.last_analysis,
            )
        candidate_gates = None
        status = rollout.status
        if status.phase is Phase.PENDING or status.observed_generation not in (None, rollout.generation):
            # About to start (or start again on a new spec): the engine refuses a candidate its gates rejected.
            candidate_gates = await self.gates.candidate_gates(rollout.spec.model, rollout.spec.candidate.version)
        tick = Tick(now=now, router=router, analysis=analysis, conflict=self._conflict(rollout),
                    candidate_gates=candidate_gates)
        outcome = reconcile(rollout, tick)
        before = rollout
        if outcome.status != rollout.status:
            if not outcome.status.phase.is_terminal() and FINALIZER not in rollout.finalizers \
                    and outcome.status.phase is not Phase.PENDING:
                # Before traffic moves: deleting the rollout must first return it to the stable.
                rollout = await self.store.set_finalizer(rollout, True)
            rollout = await self.store.write_status(rollout, outcome.status)
            self._known[key] = rollout
            self._count(before, rollout, analysis is not None)
            if before.status.started_at != rollout.status.started_at and not rollout.status.phase.is_terminal():
                # Traffic starts moving now: the first interval is measured from here.
                await self.providers.baseline(rollout)
        # The Events and the route write go out together: a rollback's route must not wait behind the Events.
        events = asyncio.gather(*(self._post(rollout, event) for event in outcome.events))
        try:
            if outcome.route is not None and router.reachable and self._owns_route(before, rollout):
                try:
                    await self.traffic.set_route(rollout.spec.model, outcome.route)
                except TrafficError as e:
                    self.metrics.errors.labels("router").inc()
                    log.warning("%s: could not set the route: %s", key, e)
                    return 1.0
        finally:
            await events
        if rollout.status.phase.is_terminal():
            await self.providers.forget(key)
            # The route the terminal status implies is in place (or none is needed): deleting the rollout
            # no longer has traffic to give back.
            if FINALIZER in rollout.finalizers and (outcome.route is None or router.reachable):
                rollout = await self.store.set_finalizer(rollout, False)
                self._known[key] = rollout
        if self.on_outcome is not None and before.status != rollout.status:
            self.on_outcome(before, rollout)
        return outcome.requeue_after

    async def _post(self, rollout: ModelRollout, event: Event) -> None:
        try:
            await self.store.post_event(rollout, event)
        except StoreError as e:
            self.metrics.errors.labels("event").inc()
            log.warning("%s: could not post Event %s: %s", rollout.key, event.reason, e)

    def _owns_route(self, before: ModelRollout, rollout: ModelRollout) -> bool:
        """Whether this reconcile may write the model's route. A live rollout always may; an ended one only
        until its last route is in place (the status just changed, or its finalizer still says traffic may
        need returning), and never once a newer rollout of the model is live: an old Succeeded rollout must
        not put its route back over the next rollout's."""
        if not rollout.status.phase.is_terminal():
            return True
        if self._newer_live(rollout) is not None:
            return False
        return before.status != rollout.status or FINALIZER in rollout.finalizers

    def _newer_live(self, rollout: ModelRollout) -> str | None:
        for other in self._known.values():
            if other.key == rollout.key or other.spec.model != rollout.spec.model:
                continue
            if not other.status.phase.is_terminal() and other.status.started_at is not None:
                return other.key
        return None

    async def _router_view(self, model: str) -> RouterView:
        try:
            route = await self.traffic.get_route(model)
        except TrafficError as e:
            self.metrics.errors.labels("router").inc()
            return RouterView(reachable=False, error=str(e))
        return RouterView(reachable=True, stable_version=route.stable.version if route is not None else None)

    def _conflict(self, rollout: ModelRollout) -> str | None:
        """The older live rollout of the same model, when there is one (this one is then refused)."""
        mine = (rollout.creation_timestamp or self.clock(), rollout.name)
        for other in self._known.values():
            if other.key == rollout.key or other.spec.model != rollout.spec.model:
                continue
            if other.status.phase.is_terminal() or other.deletion_timestamp is not None:
                continue
            if other.status.phase is Phase.PENDING and other.status.started_at is None:
                theirs = (other.creation_timestamp or self.clock(), other.name)
                if theirs > mine:
                    continue  # both waiting: the older one goes first
            return other.key
        return None

    async def _release(self, rollout: ModelRollout) -> None:
        """A deleted rollout gives its traffic back to the stable, then lets the object go."""
        route = released_route(rollout)
        if route is not None:
            await self.traffic.set_route(rollout.spec.model, route)  # raises: retried, the finalizer holds
            log.info("%s deleted mid-rollout: all traffic back on %s", rollout.key, route.stable_version)
        await self.providers.forget(rollout.key)
        if FINALIZER in rollout.finalizers:
            await self.store.set_finalizer(rollout, False)
        self._known.pop(rollout.key, None)

    def _count(self, before: ModelRollout, after: ModelRollout, analysed: bool) -> None:
        model = after.spec.model
        if analysed and after.status.last_analysis is not None:
            self.metrics.verdicts.labels(model, after.status.last_analysis.verdict.value).inc()
        if before.status.phase is not after.status.phase:
            self.metrics.transitions.labels(model, after.status.phase.value).inc()
            if after.status.phase is Phase.ROLLED_BACK:
                self.metrics.rollbacks.labels(model).inc()
            log.info("%s: %s -> %s (%s)", after.key, before.status.phase.value, after.status.phase.value,
                     after.status.message or "")
        self.metrics.set_phases(list(self._known.values()))

