"""The backlog count is changed from the event loop (reserve) and the processor thread (release): no update
may be lost, and the limit check and the reservation are one step."""

import sys
import threading

import pytest

from flywheel_drift._backlog import Backlog

ITERATIONS = 20_000


@pytest.fixture
def frequent_thread_switches():
    # A thread switch every microsecond makes a read-add-write race (what `+=` on an attribute is) lose
    # updates within a few thousand iterations; the lock must make the count exact anyway.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_reserves_and_releases_from_two_threads_leave_the_exact_count(frequent_thread_switches):
    backlog = Backlog(max_rows=10**12, max_bytes=10**12)
    for _ in range(ITERATIONS):  # work already waiting, released by the "processor"
        assert backlog.try_reserve(3, 100)
    start = threading.Barrier(2)

    def accept() -> None:
        start.wait()
        for _ in range(ITERATIONS):
            assert backlog.try_reserve(2, 50)

    def analyse() -> None:
        start.wait()
        for _ in range(ITERATIONS):
            backlog.release(3, 100)

    threads = [threading.Thread(target=accept), threading.Thread(target=analyse)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = backlog.snapshot()
    assert (snapshot.rows, snapshot.bytes, snapshot.events) == (2 * ITERATIONS, 50 * ITERATIONS, ITERATIONS)


def test_a_reservation_that_would_pass_a_limit_is_refused_and_counts_nothing():
    backlog = Backlog(max_rows=10, max_bytes=1000)
    assert backlog.try_reserve(6, 100)
    assert not backlog.try_reserve(5, 100)  # 11 rows
    assert backlog.try_reserve(4, 100)  # exactly 10: allowed
    assert not backlog.try_reserve(0, 801)  # bytes limit
    assert backlog.snapshot().rows == 10 and backlog.snapshot().events == 2
    backlog.release(6, 100)
    assert backlog.try_reserve(5, 100)
    assert backlog.snapshot() == type(backlog.snapshot())(9, 200, 2)


def test_concurrent_reservations_never_pass_the_limit_together(frequent_thread_switches):
    backlog = Backlog(max_rows=1000, max_bytes=10**12)
    start = threading.Barrier(4)
    granted = [0] * 4

    def accept(i: int) -> None:
        start.wait()
        for _ in range(2000):
            granted[i] += backlog.try_reserve(1, 1)

    threads = [threading.Thread(target=accept, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1000 == backlog.snapshot().rows
