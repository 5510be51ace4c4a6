"""The reconcile loop over the in-memory API server, an in-memory router and scripted providers: the order of
writes (status, then route), the finalizer's promise on deletion, conflicts between rollouts of one model, an
ended rollout leaving the next one's route alone, and leadership. (Rung 3, tests/cluster/test_controller.py,
runs the same loop against a real kube-apiserver and router.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flywheel_contracts import FINALIZER, ModelRollout, Phase, Route, Verdict
from flywheel_controller._gates_repo import RepositoryGates
from flywheel_controller._leader import AlwaysLeader
from flywheel_controller._reconciler import Reconciler
from flywheel_controller._store_kube import KubeRolloutStore
from flywheel_controller._traffic import NopTraffic
from flywheel_controller._types import Counts, Observation

from fake_apiserver import NS, FakeApiServer, rollout_object

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedProviders:
    """Every router metric measured as `errors` out of `requests` for the candidate (the stable: 0 of them)."""

    def __init__(self) -> None:
        self.errors, self.requests = 0, 200
        self.baselines: list[str] = []
        self.forgotten: list[str] = []

    async def measure(self, rollout: ModelRollout, since, now) -> list[Observation]:
        return [Observation(name=m.name, kind="proportion", candidate=Counts(self.requests, self.errors),
                            stable=Counts(self.requests, 0), samples=self.requests)
                for m in rollout.spec.analysis.metrics]

    async def baseline(self, rollout: ModelRollout) -> None:
        self.baselines.append(rollout.key)

    async def forget(self, key: str) -> None:
        self.forgotten.append(key)


class Rig:
    def __init__(self, api: FakeApiServer, store: KubeRolloutStore) -> None:
        self.api, self.store = api, store
        self.clock = Clock()
        self.traffic = NopTraffic({"fraud": Route.model_validate({"model": "fraud", "stable": {"version": "v1"}})})
        self.providers = ScriptedProviders()
        self.reconciler = Reconciler(store=store, traffic=self.traffic, providers=self.providers,
                                     elector=AlwaysLeader(), clock=self.clock)

    def apply(self, name: str = "fraud-v2", **spec) -> None:
        self.api.add("modelrollouts", rollout_object(name, **spec))

    async def settle(self, name: str = "fraud-v2", rounds: int = 20) -> ModelRollout:
        """Reconcile `name` until its status stops changing (the engine takes one move per reconcile)."""
        rollout = None
        for _ in range(rounds):
            before = await self.store.get(NS, name)
            if before is None:
                return rollout
            await self.reconciler.reconcile_once(f"{NS}/{name}")
            rollout = await self.store.get(NS, name)
            if rollout is not None and rollout.status == before.status and rollout.finalizers == before.finalizers:
                return rollout
            self.clock.advance(0.1)
        return rollout

    def route(self) -> Route:
        return self.traffic.routes["fraud"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    api = FakeApiServer()
    token = tmp_path / "token"
    token.write_text("t\n")
    client = api.client(token)
    yield Rig(api, KubeRolloutStore(client, NS))
    await client.aclose()


async def test_a_started_rollout_holds_the_finalizer_moves_traffic_and_takes_a_baseline(rig):
    rig.apply()  # steps: setWeight 10, pause {}
    rollout = await rig.settle()
    assert rollout.status.phase is Phase.PAUSED and rollout.status.candidate_weight == 10
    assert FINALIZER in rollout.finalizers
    assert rig.route().candidate.version == "v2" and rig.route().candidate_weight == 10
    assert rig.providers.baselines == [f"{NS}/fraud-v2"]
    reasons = [e["reason"] for e in rig.api.list("events")]
    assert reasons[:2] == ["Started", "SetWeight"]


async def test_deleting_a_rollout_mid_way_returns_all_traffic_to_the_stable_before_it_goes(rig):
    rig.apply()
    await rig.settle()
    rig.api.delete("modelrollouts", "fraud-v2")  # held by the finalizer: deletionTimestamp set
    assert rig.api.get("modelrollouts", "fraud-v2") is not None
    await rig.reconciler.reconcile_once(f"{NS}/fraud-v2")
    assert rig.route().stable.version == "v1" and rig.route().candidate is None
    assert rig.api.get("modelrollouts", "fraud-v2") is None, "the finalizer was let go"


async def test_a_failing_analysis_rolls_back_in_the_same_reconcile(rig):
    rig.apply(strategy={"type": "Canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1h"}}]}},
              analysis={"interval": "1s", "minSamples": 10,
                        "metrics": [{"name": "errors", "provider": "router", "metric": "error_rate", "max": 0.01}]})
    await rig.settle()
    assert rig.route().candidate_weight == 20
    rig.providers.errors = 60  # 30% errors on 200 requests: decisive evidence
    rig.clock.advance(2)
    rollout = await rig.settle()
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert rollout.status.last_analysis.verdict is Verdict.FAILED and rollout.status.last_analysis.decisive
    assert rig.route().candidate is None and rig.route().stable.version == "v1"
    assert FINALIZER not in rollout.finalizers, "ended, its route in place: nothing left to give back"


async def test_the_later_rollout_of_a_model_is_refused_and_moves_no_traffic(rig):
    rig.apply("first")
    await rig.settle("first")
    rig.apply("second", candidate={"version": "v3"})
    second = await rig.settle("second")
    assert second.status.phase is Phase.FAILED and "first" in (second.status.message or "")
    assert rig.route().candidate.version == "v2"


def publish(repo: Path, version: str, status: str) -> None:
    """A version's metadata.json with the trainer's `gates` verdict (flywheel_core.model_repo.VersionGates)."""
    passed = status == "candidate"
    gate = {"name": "pr_auc_gain", "passed": passed, "reason": "lower end -0.004 not above 0.0"}
    (repo / "fraud" / version).mkdir(parents=True)
    (repo / "fraud" / version / "metadata.json").write_text(json.dumps(
        {"model": "fraud", "version": version, "gates": {"status": status, "passed": passed, "stable_version": "v1",
                                                         "checks": [gate]}}))


async def test_a_candidate_published_as_rejected_is_refused_before_any_traffic_moves(rig, tmp_path):
    rig.reconciler.gates = RepositoryGates(tmp_path)
    publish(tmp_path, "v2", "rejected")
    rig.apply()
    rollout = await rig.settle()
    assert rollout.status.phase is Phase.FAILED and rollout.status.started_at is None
    assert "rejected by its gates" in rollout.status.message and "pr_auc_gain" in rollout.status.message
    assert rig.route().candidate is None and rig.traffic.writes == 0, "the router was never touched"
    assert FINALIZER not in rollout.finalizers and rig.providers.baselines == []
    assert [e["reason"] for e in rig.api.list("events")] == ["CandidateRejected"]


async def test_a_spec_moved_to_a_rejected_candidate_mid_rollout_is_refused_before_it_takes_traffic(rig, tmp_path):
    rig.reconciler.gates = RepositoryGates(tmp_path)
    publish(tmp_path, "v2", "candidate")
    publish(tmp_path, "v3", "rejected")
    rig.apply()
    assert (await rig.settle()).status.phase is Phase.PAUSED and rig.route().candidate.version == "v2"
    rig.api.modify("modelrollouts", "fraud-v2", lambda obj: obj["spec"].update(candidate={"version": "v3"}))
    rollout = await rig.settle()
    assert rollout.status.phase is Phase.FAILED and "v3 was published as rejected" in rollout.status.message
    assert rig.route().candidate.version == "v2", "v3 never entered the route"


async def test_an_ended_rollout_leaves_a_newer_rollouts_route_alone(rig):
    rig.apply("old", strategy={"type": "Canary", "canary": {"steps": [{"setWeight": 50}]}})
    old = await rig.settle("old")
    assert old.status.phase is Phase.SUCCEEDED and rig.route().stable.version == "v2"
    rig.apply("new", stable={"version": "v2"}, candidate={"version": "v3"})
    await rig.settle("new")
    assert rig.route().candidate.version == "v3"
    writes = rig.traffic.writes
    await rig.reconciler.reconcile_once(f"{NS}/old")  # a resync of the ended one
    assert rig.traffic.writes == writes and rig.route().candidate.version == "v3"


async def test_only_the_leader_acts_and_a_new_leader_looks_at_everything(rig):
    class Switch:
        """An elector the test flips; `looks` counts how often the loop asked whether it leads."""

        leading = False
        looks = 0

        @property
        def is_leader(self) -> bool:
            self.looks += 1
            return self.leading

        async def run(self) -> None:
            await asyncio.Event().wait()

        async def release(self) -> None:
            pass

    switch = Switch()
    rig.reconciler.elector = switch
    rig.reconciler.clock = lambda: datetime.now(timezone.utc)  # the loop runs on its own here
    rig.apply()
    task = asyncio.create_task(rig.reconciler.run())
    try:
        # The rollout is listed and due before the loop first asks; asking again means a whole pass as a
        # standby went by with it due.
        await until(lambda: switch.looks >= 2)
        assert (await rig.store.get(NS, "fraud-v2")).status.started_at is None, "a standby acted"
        switch.leading = True
        phase = None
        async with asyncio.timeout(10):  # a bound on a stuck loop, not a claim about speed
            while phase is not Phase.PAUSED:
                await asyncio.sleep(0.05)
                phase = (await rig.store.get(NS, "fraud-v2")).status.phase
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition, timeout: float = 10.0) -> None:
    """Poll until `condition()`; the timeout is a bound on a stuck test, not a claim about speed."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_unreachable_router_holds_the_rollout_and_says_why(rig):
    class Down(NopTraffic):
        async def get_route(self, model):
            from flywheel_controller._ports import TrafficError

            raise TrafficError("the router at http://router:8001 is unreachable (ConnectError)")

    rig.reconciler.traffic = Down()
    rig.apply()
    rollout = await rig.settle()
    assert rollout.status.phase is Phase.PENDING and "unreachable" in (rollout.status.message or "")
    assert FINALIZER not in rollout.finalizers

