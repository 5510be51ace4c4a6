"""The inference lane: off-loop scoring, stacking of waiting requests, and isolation of failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from flywheel_predictor._lane import InferenceLane


class Recorder:
    """A stand-in for session.run that doubles its input and records each call's row count."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate
        self.entered = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        if self.gate is not None and len(self.calls) == 1:
            self.entered.set()
            self.gate.wait(5)  # hold the first run so that later requests queue up behind it
        self.threads.add(threading.current_thread().name)
        if (rows < 0).any():
            raise ValueError("negative row")
        return rows[:, :1] * 2


async def hold(lane: InferenceLane, run: Recorder) -> asyncio.Future:
    """Start a one-row request and wait until the lane's thread is inside it."""
    first = lane.score(rows(0))
    await asyncio.get_running_loop().run_in_executor(None, run.entered.wait, 5)
    return first


def rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values], dtype=np.float32)


def test_a_lone_request_is_scored_off_the_event_loop_thread() -> None:
    run = Recorder()
    lane = InferenceLane(run, threads=1, max_rows=64, name="t")

    async def main():
        return await lane.score(rows(1.5))

    out, seconds = asyncio.run(main())
    lane.close()
    assert out.tolist() == [[3.0]] and seconds >= 0
    assert run.threads == {"t-0"}


def test_requests_waiting_together_share_one_run_and_get_their_own_rows_back() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    lane = InferenceLane(run, threads=1, max_rows=64)

    async def main():
        first = await hold(lane, run)
        others = [lane.score(rows(i, i + 0.5)) for i in range(1, 11)]
        gate.set()
        return await first, await asyncio.gather(*others)

    (first, _), others = asyncio.run(main())
    lane.close()
    assert run.calls == [1, 20]  # the held run, then the ten queued requests in one stacked run
    assert first.tolist() == [[0.0]]
    for i, (out, _) in enumerate(others, start=1):
        assert out.tolist() == [[2.0 * i], [2.0 * i + 1.0]]


def test_stacking_stops_at_max_rows() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    lane = InferenceLane(run, threads=1, max_rows=4)

    async def main():
        first = await hold(lane, run)
        waiting = [lane.score(rows(i)) for i in range(1, 9)]
        gate.set()
        return await asyncio.gather(first, *waiting)

    results = asyncio.run(main())
    lane.close()
    assert run.calls == [1, 4, 4]
    assert [out[0, 0] for out, _ in results] == [2.0 * i for i in range(9)]


def test_a_failing_request_in_a_stack_fails_alone() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    lane = InferenceLane(run, threads=1, max_rows=64)

    async def main():
        first = await hold(lane, run)
        waiting = [lane.score(rows(1)), lane.score(rows(2)), lane.score(rows(-1)), lane.score(rows(3))]
        gate.set()
        await first
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(main())
    lane.close()
    assert run.calls[:2] == [1, 4]  # the stacked run failed, then each ran alone
    assert isinstance(results[2], ValueError)
    assert [results[i][0][0, 0] for i in (0, 1, 3)] == [2.0, 4.0, 6.0]


def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    lane = InferenceLane(run, threads=1, max_rows=64)

    async def main():
        held = await hold(lane, run)
        first, second, third = lane.score(rows(1)), lane.score(rows(2)), lane.score(rows(3))
        second.cancel()
        gate.set()
        await held
        return await first, await third

    (first, _), (third, _) = asyncio.run(main())
    lane.close()
    assert (first[0, 0], third[0, 0]) == (2.0, 6.0)


@pytest.mark.parametrize("threads", [1, 3])
def test_many_concurrent_requests_all_get_answers(threads: int) -> None:
    lane = InferenceLane(Recorder(), threads=threads, max_rows=16)

    async def main():
        return await asyncio.gather(*(lane.score(rows(i)) for i in range(200)))

    results = asyncio.run(main())
    lane.close()
    assert [out[0, 0] for out, _ in results] == [2.0 * i for i in range(200)]
