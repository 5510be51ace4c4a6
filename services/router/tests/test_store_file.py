"""The file route source: generations, atomic replacement, followers see changes within a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from flywheel_router import Conflict
from flywheel_router._store_file import FileRouteSource

from conftest import eventually, route

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_second_process_sees_a_write_within_a_second(tmp_path: Path) -> None:
    writer, follower = FileRouteSource(tmp_path / "r.json", 0.25), FileRouteSource(tmp_path / "r.json", 0.25)
    seen: list[tuple[float, dict]] = []
    task = asyncio.create_task(follower.run(lambda routes: seen.append((time.monotonic(), dict(routes)))))
    await eventually(lambda: seen, "the follower never loaded the (missing) file")
    assert seen == [(seen[0][0], {})]  # a missing file is an empty, loaded route set
    written = time.monotonic()
    stored = await writer.put(route())
    await eventually(lambda: len(seen) > 1, "the follower never saw the write", timeout_s=1.0)
    task.cancel()
    assert seen[-1][1]["fraud"] == stored and seen[-1][0] - written < 1.0


async def test_generations_are_checked_and_advanced(tmp_path: Path) -> None:
    source = FileRouteSource(tmp_path / "r.json", 0.25)
    first = await source.put(route())
    assert first.generation == 1 and first.updated_at is not None
    with pytest.raises(Conflict, match="generation 1"):
        await source.put(route(generation=0))
    second = await source.put(route(generation=1, candidate={"version": "v2"}, candidateWeight=5))
    assert second.generation == 2


async def test_concurrent_writers_based_on_one_generation_lose_all_but_one(tmp_path: Path) -> None:
    sources = [FileRouteSource(tmp_path / "r.json", 0.25) for _ in range(8)]
    results = await asyncio.gather(*(s.put(route()) for s in sources), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


async def test_a_corrupt_file_keeps_the_routes_in_force(tmp_path: Path, caplog) -> None:
    path = tmp_path / "r.json"
    source = FileRouteSource(path, 0.05)
    await source.put(route())
    applied: list[dict] = []
    task = asyncio.create_task(source.run(lambda routes: applied.append(dict(routes))))
    await eventually(lambda: applied, "the source never loaded the valid file")
    path.write_text('{"routes": {"fraud": {"model": "fraud"}}}')
    await eventually(lambda: "keeping the routes in force" in caplog.text, "the source never read the corrupt file")
    task.cancel()
    assert len(applied) == 1 and "fraud" in applied[0]
    assert "route 'fraud' is invalid" in caplog.text and "keeping the routes in force" in caplog.text
