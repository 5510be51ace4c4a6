"""Lease leader election against the fake API server: one of two electors wins and the other waits, an expired
or released Lease changes hands, a leader whose renewals fail stops leading before its Lease can expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest

from flywheel_controller._kube import KubeClient
from flywheel_controller._leader import AlwaysLeader, LeaseElector

from fake_apiserver import NS, FakeApiServer

pytestmark = pytest.mark.anyio
NOON = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    async with api.client() as client:
        yield client


def elector(client: KubeClient, identity: str, clock=None, **kwargs) -> LeaseElector:
    return LeaseElector(client, NS, "flywheel-controller", identity, clock=clock or Clock(), **kwargs)


def lease(api: FakeApiServer) -> dict:
    found = api.get("leases", "flywheel-controller")
    assert found is not None
    return found["spec"]


async def test_the_first_elector_creates_the_lease_and_leads(api, client) -> None:
    a = elector(client, "pod-a")
    assert not a.is_leader
    assert await a.step() is True and a.is_leader
    assert lease(api) == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-30T12:00:00.000000Z",
        "renewTime": "2026-11-30T12:00:00.000000Z",
        "leaseTransitions": 0,
    }


async def test_a_second_elector_waits_while_the_leader_renews(api, client) -> None:
    clock = Clock()
    a, b = elector(client, "pod-a", clock), elector(client, "pod-b", clock)
    assert await a.step() and not await b.step()
    for _ in range(5):
        clock.now += 5
        assert await a.step() and not await b.step()
    spec = lease(api)
    assert spec["holderIdentity"] == "pod-a" and spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == "2026-11-30T12:00:00.000000Z" and spec["renewTime"] == "2026-11-30T12:00:25.000000Z"


async def test_an_expired_lease_is_taken_over_and_counts_a_transition(api, client) -> None:
    clock = Clock()
    a, b = elector(client, "pod-a", clock), elector(client, "pod-b", clock)
    await a.step()
    clock.now += 15  # renewTime + 15 s is not yet in the past
    assert not await b.step()
    clock.now += 0.5
    assert await b.step() and b.is_leader
    assert not a.is_leader  # its own clock says its lease is stale
    assert not await a.step()  # and the Lease names another holder
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("pod-b", 1)
    assert spec["acquireTime"] == spec["renewTime"] == "2026-11-30T12:00:15.500000Z"


async def test_losing_the_race_for_the_lease_is_not_leading(api, client) -> None:
    clock = Clock()
    a, b = elector(client, "pod-a", clock), elector(client, "pod-b", clock)
    await a.step()
    clock.now += 20
    api.fail(409, "PUT", "leases")  # another replica's update landed between b's read and its write
    assert not await b.step() and not b.is_leader


async def test_a_leader_whose_renewals_fail_steps_down_before_its_lease_can_expire(api, client, caplog) -> None:
    clock = Clock()
    a = elector(client, "pod-a", clock)
    await a.step()
    api.down = True
    clock.now += 5
    assert await a.step()  # one failed renewal: the lease is still good for 10 s
    clock.now += 4.9
    assert a.is_leader
    clock.now += 0.1  # lease_seconds - renew_seconds since the last renewal
    assert not a.is_leader
    assert not await a.step()
    assert "pod-a lost leadership" in caplog.text and caplog.text.count("unreachable") == 1
    api.down = False
    assert await a.step()  # the Lease is still its own: it renews and leads again


async def test_is_leader_turns_false_by_the_clock_even_while_no_renewal_returns(api, client) -> None:
    clock = Clock()
    a = elector(client, "pod-a", clock)
    await a.step()
    clock.now += 10
    assert not a.is_leader


async def test_the_winner_releases_and_the_standby_takes_over_within_one_renew_period(api, client) -> None:
    # Counted in the standby's attempts, not in seconds: one renew period is one pass of run()'s loop.
    a = LeaseElector(client, NS, "flywheel-controller", "pod-a", renew_seconds=0.02)
    b = LeaseElector(client, NS, "flywheel-controller", "pod-b", renew_seconds=0.02)
    attempts = 0
    step = b.step

    async def counted() -> bool:
        nonlocal attempts
        attempts += 1
        return await step()

    b.step = counted  # type: ignore[method-assign]
    runs = [asyncio.create_task(a.run())]
    await until(lambda: a.is_leader)
    runs.append(asyncio.create_task(b.run()))
    await until(lambda: attempts >= 2)  # one attempt over and the next one begun
    assert a.is_leader and not b.is_leader
    runs[0].cancel()
    await a.release()
    released = attempts
    assert not a.is_leader and lease(api)["holderIdentity"] in ("", "pod-b")
    await until(lambda: b.is_leader)  # waiting out the 15 s lease would end in a TimeoutError here
    # The attempt under way when a released (it may have read the Lease before), then the next one.
    assert attempts - released <= 2
    assert lease(api)["holderIdentity"] == "pod-b" and lease(api)["leaseTransitions"] == 1
    assert not await a.step()  # released for good
    runs[1].cancel()
    await asyncio.gather(*runs, return_exceptions=True)


async def until(condition, timeout: float = 10.0) -> None:
    """Poll until `condition()`; the timeout is a bound on a stuck test, not a claim about speed."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def test_release_frees_a_lease_a_late_renewal_moved_on_but_never_anothers(api, client) -> None:
    a = elector(client, "pod-a")
    await a.step()
    api.modify("leases", "flywheel-controller", lambda o: o["spec"].update(renewTime="2026-11-30T12:00:01.000000Z"))
    await a.release()  # 409 on the stale resourceVersion, read again: still its own, freed
    assert lease(api)["holderIdentity"] == "" and lease(api)["leaseDurationSeconds"] == 1
    b = elector(client, "pod-b")
    await b.step()
    api.modify("leases", "flywheel-controller", lambda o: o["spec"].update(holderIdentity="pod-c"))
    await b.release()
    assert lease(api)["holderIdentity"] == "pod-c"


async def test_release_without_leading_writes_nothing(api, client) -> None:
    clock = Clock()
    a, b = elector(client, "pod-a", clock), elector(client, "pod-b", clock)
    await a.step()
    await b.step()
    await b.release()
    assert lease(api)["holderIdentity"] == "pod-a" and len(api.calls("PUT")) == 0


async def test_renewing_no_more_often_than_the_lease_lasts_is_refused(client) -> None:
    with pytest.raises(ValueError, match="renew_seconds"):
        LeaseElector(client, NS, "x", "pod-a", lease_seconds=5, renew_seconds=5)


async def test_always_leader_leads_until_released() -> None:
    elector = AlwaysLeader()
    run = asyncio.create_task(elector.run())
    await asyncio.sleep(0)
    assert elector.is_leader and not run.done()
    await elector.release()
    assert not elector.is_leader
    run.cancel()
