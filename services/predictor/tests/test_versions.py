"""VersionSet in process, on tiny real models: on-demand loads, the LRU bound, idle unloads, failures
remembered, start-up loading, and the version header's grammar."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path
from time import monotonic

import numpy as np
import pytest

from flywheel_predictor import (
    ConfigError,
    InvalidRequest,
    ModelLoadError,
    OnnxModel,
    Settings,
    VersionNotServed,
    VersionSet,
    VersionUnavailable,
)
from flywheel_predictor._versions import requested_version

import tiny_model

ROWS = np.random.default_rng(13).normal(size=(2, tiny_model.DIM)).astype(np.float32)


def bias_of(version: str) -> float:
    """Each version of these repos scores with its own bias, so a score says which version made it."""
    return float(version[1:])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """fraud v1..v4, version N with bias N."""
    for n in range(1, 5):
        tiny_model.publish(tmp_path, bias=float(n))
    return tmp_path


class Loads:
    """A model factory that records which versions it was asked to load."""

    def __init__(self) -> None:
        self.versions: list[str] = []

    def __call__(self, settings: Settings, version: str) -> OnnxModel:
        self.versions.append(version)
        return OnnxModel(settings, version)


def version_set(repo: Path, **settings: object) -> tuple[VersionSet, Loads]:
    s = Settings(model_repo=repo, model_version=settings.pop("model_version", "v1"), **settings)
    default = OnnxModel(s)
    default.load()
    loads = Loads()
    return VersionSet(s, default, factory=loads), loads


def run(coroutine_function: Callable, *args):
    return asyncio.run(coroutine_function(*args))


def scores(model: OnnxModel) -> np.ndarray:
    return asyncio.run(model.infer(ROWS))


def test_a_published_version_is_loaded_on_demand_and_scores_as_itself(repo: Path) -> None:
    versions, loads = version_set(repo)
    model = run(versions.get, "v3")
    assert model.version == "v3" and loads.versions == ["v3"]
    np.testing.assert_allclose(scores(model), tiny_model.reference(ROWS, bias_of("v3")), rtol=1e-5)
    assert versions.loaded == ["v1", "v3"]
    assert run(versions.get, None) is versions.default


def test_concurrent_requests_for_an_unloaded_version_wait_for_one_load(repo: Path) -> None:
    versions, loads = version_set(repo)

    async def many() -> list[OnnxModel]:
        return await asyncio.gather(*(versions.get("v2") for _ in range(16)))

    models = asyncio.run(many())
    assert loads.versions == ["v2"]
    assert all(model is models[0] for model in models)


def test_an_unpublished_version_is_not_served_listing_the_published_ones(repo: Path) -> None:
    versions, loads = version_set(repo)
    with pytest.raises(VersionNotServed, match=r"no published version 'v9'; published: v1, v2, v3, v4"):
        run(versions.get, "v9")
    assert loads.versions == []


def test_loading_past_the_bound_unloads_the_least_recently_used_version_first(repo: Path) -> None:
    versions, _ = version_set(repo, max_loaded_versions=3)
    v2 = run(versions.get, "v2")
    run(versions.get, "v3")
    versions.lookup("v2")  # v2 is now more recently used than v3
    run(versions.get, "v4")
    assert versions.loaded == ["v1", "v2", "v4"]
    assert v2.ready


def test_the_default_and_listed_versions_are_never_pushed_out_and_a_full_set_of_them_is_503(repo: Path) -> None:
    versions, _ = version_set(repo, versions="v2", max_loaded_versions=2)
    versions.load_at_start()
    assert versions.loaded == ["v1", "v2"]
    with pytest.raises(VersionUnavailable, match="MAX_LOADED_VERSIONS=2") as refused:
        run(versions.get, "v3")
    assert "v1, v2" in str(refused.value)
    assert versions.loaded == ["v1", "v2"]


def test_an_idle_version_is_unloaded_but_the_default_and_listed_ones_are_not(repo: Path) -> None:
    versions, _ = version_set(repo, versions="v2", unload_idle_s=60)
    versions.load_at_start()
    v3 = run(versions.get, "v3")
    versions.sweep(monotonic() + 30)
    assert versions.loaded == ["v1", "v2", "v3"]
    versions.sweep(monotonic() + 61)
    assert versions.loaded == ["v1", "v2"]
    assert not v3.ready


def test_unload_idle_zero_never_unloads(repo: Path) -> None:
    versions, _ = version_set(repo, unload_idle_s=0)
    run(versions.get, "v2")
    versions.sweep(monotonic() + 10**6)
    assert versions.loaded == ["v1", "v2"]


def test_an_unloaded_version_refuses_new_rows_with_503(repo: Path) -> None:
    versions, _ = version_set(repo)
    model = run(versions.get, "v2")
    versions.unload("v2", "test")
    with pytest.raises(VersionUnavailable, match="unloaded"):
        scores(model)


def test_rows_queued_before_an_unload_are_still_scored(repo: Path) -> None:
    versions, _ = version_set(repo)

    async def score_across_unload() -> np.ndarray:
        model = await versions.get("v2")
        lane, queued = model._lane, asyncio.Event()
        score = lane.score

        def score_and_tell(rows: np.ndarray) -> asyncio.Future:
            future = score(rows)
            queued.set()
            return future

        lane.score = score_and_tell  # the test learns when the rows are on the lane, rather than guessing
        pending = asyncio.ensure_future(model.infer(ROWS))
        try:
            await asyncio.wait_for(queued.wait(), 5)
        except TimeoutError:
            raise AssertionError("the rows never reached the inference lane") from None
        versions.unload("v2", "test")
        return await pending

    np.testing.assert_allclose(asyncio.run(score_across_unload()), tiny_model.reference(ROWS, 2.0), rtol=1e-5)


def tamper(repo: Path, version: str) -> None:
    with open(repo / "fraud" / version / "model.fp32.onnx", "ab") as handle:
        handle.write(b"\0")


def test_a_failed_load_is_remembered_rather_than_tried_on_every_request(repo: Path) -> None:
    tamper(repo, "v2")
    versions, loads = version_set(repo, load_retry_s=60)
    with pytest.raises(VersionUnavailable, match="sha256") as first:
        run(versions.get, "v2")
    assert "version v2 cannot be served" in str(first.value)
    with pytest.raises(VersionUnavailable, match="next load attempt in"):
        run(versions.get, "v2")
    assert loads.versions == ["v2"]
    assert versions.loaded == ["v1"]


def test_a_failed_load_is_tried_again_after_load_retry_s(repo: Path) -> None:
    tamper(repo, "v2")
    versions, loads = version_set(repo, load_retry_s=0)
    for _ in range(2):
        with pytest.raises(VersionUnavailable):
            run(versions.get, "v2")
    assert loads.versions == ["v2", "v2"]


def test_start_up_loads_the_listed_versions_and_pins_them(repo: Path) -> None:
    versions, loads = version_set(repo, versions="v3,v2")
    versions.load_at_start()
    assert loads.versions == ["v2", "v3"]
    assert versions.pinned == {"v1", "v2", "v3"}


def test_start_up_refuses_a_listed_version_that_is_not_published(repo: Path) -> None:
    versions, _ = version_set(repo, versions="v7")
    with pytest.raises(ModelLoadError, match="FLYWHEEL_PREDICTOR_VERSIONS lists v7.*published: v1, v2, v3, v4"):
        versions.load_at_start()


def test_start_up_refuses_when_latest_and_the_listed_versions_do_not_fit(repo: Path) -> None:
    # Settings cannot tell (latest may be one of the listed); once latest is v4 it is 3 pinned for 2 places.
    versions, _ = version_set(repo, model_version="latest", versions="v1,v2", max_loaded_versions=2)
    with pytest.raises(ConfigError, match="Config 'FLYWHEEL_PREDICTOR_MAX_LOADED_VERSIONS' has value '2'"):
        versions.load_at_start()


def test_all_loads_the_newest_versions_up_to_the_bound(repo: Path) -> None:
    versions, loads = version_set(repo, versions="all", max_loaded_versions=3)
    versions.load_at_start()
    assert loads.versions == ["v4", "v3"]
    assert versions.loaded == ["v1", "v3", "v4"]
    assert versions.pinned == {"v1"}


def test_the_poll_loads_a_version_published_later_and_leaves_the_default_alone(repo: Path) -> None:
    versions, loads = version_set(repo, versions="all", max_loaded_versions=8)
    versions.load_at_start()
    tiny_model.publish(repo, bias=5.0)
    run(versions.poll)
    run(versions.poll)  # seen once, loaded once
    assert loads.versions.count("v5") == 1
    assert versions.loaded == ["v1", "v2", "v3", "v4", "v5"]
    assert versions.default.version == "v1"


def test_a_worker_gets_the_versions_with_sessions_of_its_own(repo: Path) -> None:
    versions, _ = version_set(repo, versions="v2")
    versions.load_at_start()
    copy = pickle.loads(pickle.dumps(versions))
    assert copy.loaded == ["v1", "v2"]
    assert copy.default is copy.lookup("v1")
    assert copy.lookup("v2").runtime is not versions.lookup("v2").runtime
    np.testing.assert_allclose(scores(copy.lookup("v2")), tiny_model.reference(ROWS, 2.0), rtol=1e-5)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("  ", None), ("v2", "v2"), (" v12 ", "v12")])
def test_the_version_header_names_a_version_or_the_default(value: str | None, expected: str | None) -> None:
    assert requested_version(value) == expected


@pytest.mark.parametrize("value", ["2", "latest", "V2", "v2,v3", "v-1", "v2 ; drop"])
def test_a_malformed_version_header_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(InvalidRequest, match="header 'x-flywheel-model-version' has value"):
        requested_version(value)
