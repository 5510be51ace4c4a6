"""Router statistics over an interval: every replica read concurrently, baselines kept per rollout, replicas that
fail left out and counted, and the window handed to _router_metrics.

The replicas are played by `FakeReplicas`, a MockTransport handler serving `GET /v1/stats/{model}` as
services/router/src/flywheel_router/_admin.py does (bearer token, RouterStats JSON, 404 for a model without a
route on that replica), with cumulative counters the test moves forward.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from flywheel_contracts import MetricSpec, ModelRollout
from flywheel_controller._provider_router import FIRST_INTERVAL, RouterStatsProvider
from flywheel_controller._types import Counts

pytestmark = pytest.mark.anyio
TOKEN = "stats-token"
T0 = datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, None]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def histogram(count: int) -> dict:
    return {"le": BUCKETS, "counts": [count] + [0] * (len(BUCKETS) - 1), "sum": 0.004 * count, "count": count}


@dataclass
class Replica:
    name: str
    started_at: datetime = T0 - timedelta(hours=1)
    requests: dict[str, int] = field(default_factory=lambda: {"v1": 0, "v2": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"v1": 0, "v2": 0})
    compared: int = 0
    shadow_errors: int = 0
    down: bool = False
    models: tuple[str, ...] = ("fraud",)

    @property
    def url(self) -> str:
        return f"http://{self.name}.router.test:8001"

    def serve(self, version: str, requests: int, errors: int = 0) -> None:
        self.requests[version] += requests
        self.errors[version] += errors

    def restart(self, at: datetime) -> None:
        self.started_at = at
        self.requests = {v: 0 for v in self.requests}
        self.errors = {v: 0 for v in self.errors}

    def stats(self, model: str) -> dict:
        roles = {"v1": "stable", "v2": "candidate"}
        return {
            "schemaVersion": 1,
            "model": model,
            "replica": self.name,
            "startedAt": self.started_at.isoformat(),
            "timestamp": T0.isoformat(),
            "versions": {
                v: {"role": roles[v], "requests": n, "errors": self.errors[v], "predictions": n,
                    "latencySeconds": histogram(n), "scores": histogram(n)}
                for v, n in self.requests.items()
            },
            "shadow": {"candidateVersion": "v2", "compared": self.compared, "candidateErrors": self.shadow_errors,
                       "predictionsCompared": self.compared, "scoreDiff": histogram(self.compared),
                       "candidateLatencySeconds": histogram(self.compared)},
        }


class FakeReplicas:
    def __init__(self, *names: str) -> None:
        self.replicas = {name: Replica(name) for name in names}
        self.requests: list[httpx.Request] = []

    def __getitem__(self, name: str) -> Replica:
        return self.replicas[name]

    async def discover(self) -> list[tuple[str, str]]:
        return [(r.name, r.url) for r in self.replicas.values()]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replica = next(r for r in self.replicas.values() if r.url == f"{request.url.scheme}://{request.url.netloc.decode()}")
        if replica.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"error": "send Authorization: Bearer <token> (the router's admin token Secret)"})
        model = request.url.path.rsplit("/", 1)[-1]
        if model not in replica.models:
            return httpx.Response(404, json={"error": f"no statistics for model '{model}': it has no route on this replica"})
        return httpx.Response(200, json=replica.stats(model))


def rollout(strategy: str = "Canary", name: str = "fraud-v2") -> ModelRollout:
    blocks = {"Canary": {"canary": {"steps": [{"setWeight": 10}]}}, "Shadow": {"shadow": {}}}
    return ModelRollout.model_validate({
        "name": name,
        "spec": {
            "model": "fraud",
            "candidate": {"version": "v2"},
            "strategy": {"type": strategy, **blocks[strategy]},
            "analysis": {"metrics": [ERROR_RATE.model_dump(by_alias=True)]},
        },
        "status": {"stableVersion": "v1"},
    })


ERROR_RATE = MetricSpec(name="errors", provider="router", metric="error_rate", max=0.01)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path


@pytest.fixture
def fleet() -> FakeReplicas:
    return FakeReplicas("router-a", "router-b")


@pytest.fixture
def provider(fleet: FakeReplicas, token_file: Path) -> RouterStatsProvider:
    return RouterStatsProvider(fleet.discover, token_file, transport=httpx.MockTransport(fleet), clock=lambda: T0)


async def interval(provider: RouterStatsProvider, r: ModelRollout, minute: int):
    since, now = T0 + timedelta(minutes=minute - 1), T0 + timedelta(minutes=minute)
    return await provider.measure(r, [ERROR_RATE], since, now)


async def test_the_first_interval_takes_the_baseline_and_the_next_sums_every_replicas_growth(fleet, provider) -> None:
    fleet["router-a"].serve("v2", 500, 5)
    first = await interval(provider, rollout(), 1)
    assert [o.error for o in first] == [FIRST_INTERVAL]
    fleet["router-a"].serve("v2", 100, 2)
    fleet["router-b"].serve("v2", 300, 1)
    fleet["router-a"].serve("v1", 900, 9)
    [errors] = await interval(provider, rollout(), 2)
    assert errors.error is None and errors.name == "errors" and errors.kind == "proportion"
    assert errors.candidate == Counts(n=400, x=3) and errors.stable == Counts(n=900, x=9)
    assert errors.samples == 400


async def test_a_baseline_taken_when_traffic_starts_makes_the_first_interval_count(fleet, provider) -> None:
    fleet["router-a"].serve("v2", 1000, 50)  # before the rollout's traffic: not its concern
    assert await provider.baseline(rollout()) == 2
    fleet["router-b"].serve("v2", 200, 4)
    [errors] = await provider.measure(rollout(), [ERROR_RATE], None, T0 + timedelta(minutes=1))
    assert errors.candidate == Counts(n=200, x=4)


async def test_replicas_are_read_concurrently(token_file) -> None:
    fleet = FakeReplicas("router-a", "router-b", "router-c")
    arrived, everyone = [], asyncio.Event()

    async def wait_for_the_others(request: httpx.Request) -> httpx.Response:
        arrived.append(request)
        if len(arrived) % 3 == 0:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 1.0)  # read one after another, this times out
        return fleet(request)

    provider = RouterStatsProvider(fleet.discover, token_file, transport=httpx.MockTransport(wait_for_the_others))
    assert await provider.baseline(rollout()) == 3


async def test_a_failing_replica_is_left_out_counted_and_rejoins_after_a_fresh_baseline(fleet, provider) -> None:
    await provider.baseline(rollout())
    fleet["router-b"].down = True
    fleet["router-a"].serve("v2", 100, 1)
    fleet["router-b"].serve("v2", 100, 1)  # not readable: missed, not guessed
    [errors] = await interval(provider, rollout(), 1)
    assert errors.candidate == Counts(n=100, x=1) and provider.replica_failures == 1
    fleet["router-b"].down = False
    fleet["router-a"].serve("v2", 10)
    fleet["router-b"].serve("v2", 70)  # b's growth since its last good read spans two intervals: skipped
    [errors] = await interval(provider, rollout(), 2)
    assert errors.candidate == Counts(n=10, x=0)
    fleet["router-a"].serve("v2", 10)
    fleet["router-b"].serve("v2", 20)
    [errors] = await interval(provider, rollout(), 3)
    assert errors.candidate == Counts(n=30, x=0)


async def test_a_replica_restarted_inside_the_interval_counts_from_its_restart(fleet, provider) -> None:
    await provider.baseline(rollout())
    fleet["router-b"].restart(T0 + timedelta(seconds=30))
    fleet["router-b"].serve("v2", 40, 2)
    fleet["router-a"].serve("v2", 60)
    [errors] = await provider.measure(rollout(), [ERROR_RATE], T0, T0 + timedelta(minutes=1))
    assert errors.candidate == Counts(n=100, x=2)


async def test_when_no_replica_answers_every_metric_says_why(fleet, provider) -> None:
    fleet["router-a"].down = fleet["router-b"].down = True
    latency = MetricSpec(name="latency", provider="router", metric="latency_p99_seconds", max=0.25)
    observed = await provider.measure(rollout(), [ERROR_RATE, latency], None, T0)
    assert [o.name for o in observed] == ["errors", "latency"]
    for o in observed:
        assert o.error.startswith("router statistics unavailable: router-a (http://router-a.router.test:8001): "
                                  "unreachable: ConnectError: [Errno 111] Connection refused; router-b")
    assert provider.replica_failures == 2


async def test_a_replica_without_a_route_for_the_model_is_left_out(fleet, provider) -> None:
    fleet["router-b"].models = ()
    await provider.baseline(rollout())
    fleet["router-a"].serve("v2", 5)
    [errors] = await interval(provider, rollout(), 1)
    assert errors.candidate == Counts(n=5, x=0) and provider.replica_failures == 2


async def test_a_refused_or_missing_token_is_named(fleet, tmp_path) -> None:
    (tmp_path / "wrong").write_text("not-it")
    wrong = RouterStatsProvider(fleet.discover, tmp_path / "wrong", transport=httpx.MockTransport(fleet))
    [o] = await wrong.measure(rollout(), [ERROR_RATE], None, T0)
    assert "refused the controller's token (FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE)" in o.error
    unset = RouterStatsProvider(fleet.discover, None, transport=httpx.MockTransport(fleet))
    [o] = await unset.measure(rollout(), [ERROR_RATE], None, T0)
    assert "no router admin token file is configured (FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE)" in o.error


async def test_no_replicas_or_a_failing_discovery_is_said(token_file) -> None:
    async def none() -> list[tuple[str, str]]:
        return []

    async def broken() -> list[tuple[str, str]]:
        raise RuntimeError("endpointslices is forbidden")

    [o] = await RouterStatsProvider(none, token_file).measure(rollout(), [ERROR_RATE], None, T0)
    assert o.error == "router statistics unavailable: no router replicas found"
    [o] = await RouterStatsProvider(broken, token_file).measure(rollout(), [ERROR_RATE], None, T0)
    assert o.error == "router statistics unavailable: cannot list the router replicas: endpointslices is forbidden"


async def test_a_shadow_rollout_is_judged_on_the_mirrored_answers(fleet, provider) -> None:
    shadow = rollout("Shadow")
    await provider.baseline(shadow)
    fleet["router-a"].compared, fleet["router-a"].shadow_errors = 300, 6
    fleet["router-a"].serve("v1", 300)
    [errors] = await interval(provider, shadow, 1)
    assert errors.candidate == Counts(n=300, x=6)


async def test_baselines_are_kept_per_rollout_and_forget_drops_them(fleet, provider) -> None:
    one, other = rollout(name="one"), rollout(name="other")
    await provider.baseline(one)
    fleet["router-a"].serve("v2", 10)
    await provider.baseline(other)
    fleet["router-a"].serve("v2", 5)
    [a] = await interval(provider, one, 1)
    [b] = await interval(provider, other, 1)
    assert (a.candidate.n, b.candidate.n) == (15, 5)
    await provider.forget(one.key)
    [again] = await interval(provider, one, 2)
    assert again.error == FIRST_INTERVAL


async def test_no_metrics_reads_nothing(fleet, provider) -> None:
    assert await provider.measure(rollout(), [], None, T0) == []
    assert fleet.requests == []
