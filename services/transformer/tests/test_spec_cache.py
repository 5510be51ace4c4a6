"""SpecCache: the spec of a request-named version is loaded once, kept in a bounded LRU, and refusals are
remembered for a recheck interval, so no request reads the disk once its answer is known."""

import asyncio
import shutil

import pytest

from flywheel_transformer._errors import VersionNotPublished, VersionUnusable, error_body, status_of
from flywheel_transformer._repo import SpecCache, load_spec

from conftest import DEFAULTS, V2_DEFAULTS, publish_version, run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache_of(repo, capacity=8, clock=None):
    return SpecCache(repo, "fraud", recheck_s=5.0, capacity=capacity, clock=clock or Clock())


def test_a_version_is_loaded_once_even_for_concurrent_first_requests_then_served_from_memory(two_versions):
    cache = cache_of(two_versions)

    async def go():
        return await asyncio.gather(*(cache.get("v2") for _ in range(5)))

    specs = run(go())
    assert {s.version for s in specs} == {"v2"}
    assert specs[0].defaults == V2_DEFAULTS
    assert cache.loads == 1
    shutil.rmtree(two_versions / "fraud" / "v2")  # from now on a disk read would fail
    assert run(cache.get("v2")).defaults == V2_DEFAULTS
    assert cache.loads == 1


def test_the_default_version_put_at_start_up_needs_no_load(two_versions):
    cache = cache_of(two_versions)
    cache.put(load_spec(two_versions, "fraud", "v1"))
    assert run(cache.get("v1")).defaults == DEFAULTS
    assert cache.loads == 0


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_version(two_versions):
    publish_version(two_versions)  # v3
    cache = cache_of(two_versions, capacity=2)

    async def go():
        await cache.get("v1")
        await cache.get("v2")
        await cache.get("v1")  # v2 is now the least recently used
        await cache.get("v3")

    run(go())
    assert cache.cached() == ["v1", "v3"]
    assert cache.loads == 3


def test_an_unpublished_version_is_a_404_listing_what_is_published(two_versions):
    with pytest.raises(VersionNotPublished) as caught:
        run(cache_of(two_versions).get("v7"))
    assert status_of(caught.value) == 404
    body = error_body(caught.value)
    assert (body["type"], body["version"], body["published"]) == ("version_not_published", "v7", ["v1", "v2"])
    assert "'v7'" in body["error"] and "v1, v2" in body["error"]


def test_a_version_published_later_is_served_after_the_recheck_interval(two_versions):
    clock = Clock()
    cache = cache_of(two_versions, clock=clock)
    with pytest.raises(VersionNotPublished):
        run(cache.get("v3"))
    publish_version(two_versions)  # v3 appears
    with pytest.raises(VersionNotPublished):  # the listing is remembered: no disk read per request
        run(cache.get("v3"))
    clock.now += 5.0
    assert run(cache.get("v3")).version == "v3"


def test_a_published_version_that_fails_its_digests_is_a_503_remembered_until_the_recheck(two_versions):
    clock = Clock()
    cache = cache_of(two_versions, clock=clock)
    model_file = two_versions / "fraud" / "v2" / "model.fp32.onnx"
    original = model_file.read_bytes()
    model_file.write_bytes(b"tampered")
    with pytest.raises(VersionUnusable) as caught:
        run(cache.get("v2"))
    assert status_of(caught.value) == 503
    assert error_body(caught.value)["version"] == "v2"
    assert "sha256" in str(caught.value)
    model_file.write_bytes(original)
    with pytest.raises(VersionUnusable):  # not re-hashed on every request
        run(cache.get("v2"))
    clock.now += 5.0
    assert run(cache.get("v2")).defaults == V2_DEFAULTS
    assert cache.loads == 1
