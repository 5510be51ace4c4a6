"""The configmap route source against a fake API server (httpx.MockTransport): list then watch, bad routes
skipped, generations, the API server's own optimistic concurrency, and errors that say what to fix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from flywheel_router import ConfigError, Conflict, RouteSourceError, Settings
from flywheel_router._store_kube import ConfigMapRouteSource

from conftest import eventually, route

pytestmark = pytest.mark.anyio
NS, NAME = "ml", "fw-flywheel-routes"
COLLECTION = f"/api/v1/namespaces/{NS}/configmaps"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stored(**fields: object) -> str:
    return orjson.dumps(route(**fields).to_json()).decode()


class FakeApi:
    """One ConfigMap behind the four calls the source makes; watch events are pushed by the test."""

    def __init__(self, data: dict[str, str] | None) -> None:
        self.rv = 100
        self.configmap = None if data is None else self._object(data)
        self.requests: list[httpx.Request] = []
        self.events: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.answers: dict[str, list[int]] = {}  # "GET list" / "GET watch" / "GET" / "PUT": statuses to answer first
        self.tokens: list[str] = []

    def _object(self, data: dict[str, str]) -> dict:
        self.rv += 1
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": data,
            "metadata": {"name": NAME, "namespace": NS, "resourceVersion": str(self.rv)},
        }

    def modify(self, data: dict[str, str], kind: str = "MODIFIED") -> None:
        self.configmap = self._object(data)
        self.push(kind, self.configmap)

    def push(self, kind: str, obj: dict) -> None:
        self.events.put_nowait(orjson.dumps({"type": kind, "object": obj}) + b"\n")

    async def _stream(self) -> AsyncIterator[bytes]:
        while (line := await self.events.get()) is not None:
            yield line

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.tokens.append(request.headers["authorization"])
        watch = request.url.params.get("watch") == "1"
        call = request.method + (" watch" if watch else " list" if request.url.path == COLLECTION else "")
        if self.answers.get(call):
            status = self.answers[call].pop(0)
            return httpx.Response(status, json={"kind": "Status", "code": status, "message": f"fake {status}"})
        if watch:
            return httpx.Response(200, content=self._stream())
        if call == "GET list":
            items = [self.configmap] if self.configmap else []
            return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": str(self.rv)}})
        if self.configmap is None:
            return httpx.Response(404, json={"kind": "Status", "code": 404, "message": "not found"})
        if request.method == "GET":
            return httpx.Response(200, json=self.configmap)
        body = orjson.loads(request.content)
        if body["metadata"]["resourceVersion"] != self.configmap["metadata"]["resourceVersion"]:
            return httpx.Response(409, json={"kind": "Status", "code": 409, "message": "object has been modified"})
        self.modify(body["data"])
        return httpx.Response(200, json=self.configmap)


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("t1\n")
    return path


def source(api: FakeApi, token: Path) -> ConfigMapRouteSource:
    return ConfigMapRouteSource(
        api_url="https://api.test:6443",
        namespace=NS,
        name=NAME,
        token_file=token,
        ca_file=None,
        transport=httpx.MockTransport(api),
    )


class Follower:
    """run() in a task, recording every apply."""

    def __init__(self, src: ConfigMapRouteSource) -> None:
        self.applied: list[dict] = []
        self.task = asyncio.create_task(src.run(lambda routes: self.applied.append(dict(routes))))

    async def until(self, count: int) -> dict:
        await eventually(lambda: len(self.applied) >= count, f"the source applied {len(self.applied)} route sets, never {count}")
        return self.applied[count - 1]

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def test_run_lists_applies_every_route_key_then_watches_from_the_lists_version(token: Path) -> None:
    api = FakeApi({"fraud.json": stored(), "chargeback.json": stored(model="chargeback"), "README": "notes"})
    follower = Follower(source(api, token))
    first = await follower.until(1)
    assert set(first) == {"fraud", "chargeback"} and first["fraud"].stable.version == "v1"
    await eventually(lambda: len(api.requests) >= 2, "the source never watched after its list")
    listed, watch = api.requests[0], api.requests[1]
    assert listed.url.params["fieldSelector"] == f"metadata.name={NAME}" and "watch" not in listed.url.params
    assert "fieldSelector=metadata.name%3D" + NAME in str(watch.url)
    assert dict(watch.url.params) | {"timeoutSeconds": "x"} == {
        "fieldSelector": f"metadata.name={NAME}",
        "watch": "1",
        "resourceVersion": "101",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "x",
    }
    assert listed.headers["authorization"] == "Bearer t1"
    await follower.stop()


async def test_watch_events_apply_the_whole_set_and_a_deletion_applies_none(token: Path) -> None:
    api = FakeApi({"fraud.json": stored()})
    follower = Follower(source(api, token))
    await follower.until(1)
    api.push("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "150"}})
    api.modify({"fraud.json": stored(candidate={"version": "v2"}, candidateWeight=10), "x.json": stored(model="x")})
    second = await follower.until(2)
    assert set(second) == {"fraud", "x"} and second["fraud"].candidate_weight == 10
    api.push("DELETED", api.configmap)
    assert await follower.until(3) == {}
    api.modify({"fraud.json": stored()}, kind="ADDED")
    assert set(await follower.until(4)) == {"fraud"}
    assert len(follower.applied) == 4  # the bookmark applied nothing
    await follower.stop()


async def test_a_stable_key_is_the_models_route_until_one_is_written(token: Path) -> None:
    api = FakeApi({"fraud.stable": "v3", "chargeback.stable": "v1\n", "chargeback.json": stored(model="chargeback")})
    follower = Follower(source(api, token))
    first = await follower.until(1)
    assert first["fraud"] == route(stable={"version": "v3"}) and first["fraud"].generation == 0
    assert first["chargeback"] == route(model="chargeback")  # the written route wins
    src = source(api, token)
    written = await src.put(route(stable={"version": "v3"}, candidate={"version": "v4"}, candidateWeight=5))
    assert written.generation == 1  # the chart's default counts as no route yet
    assert (await follower.until(2))["fraud"] == written
    await follower.stop()
    await src.aclose()


async def test_an_invalid_route_is_skipped_and_logged_once_per_resource_version(token: Path, caplog) -> None:
    caplog.set_level(logging.ERROR)
    bad = {
        "fraud.json": stored(),
        "x.json": '{"model": "x"}',
        "y.json": stored(model="z"),
        "w.json": "{",
        "v.stable": "not a version",
    }
    api = FakeApi(bad)
    follower = Follower(source(api, token))
    assert set(await follower.until(1)) == {"fraud"}
    text = caplog.text
    assert "key 'x.json' is not a valid route (stable: Field required)" in text
    assert "key 'y.json' holds the route of model 'z'" in text and "key 'w.json' is not a valid route" in text
    assert "key 'v.stable' is not a valid route (stable.version: String should match pattern" in text
    api.events.put_nowait(None)  # the server ends the watch: re-watched from where it was, nothing re-logged
    calls = len(api.requests)
    await eventually(lambda: len(api.requests) > calls, "the source never watched again after the watch ended")
    assert api.requests[calls].url.params.get("watch") == "1"  # no list in between: from where it was
    assert caplog.text.count("x.json") == 1
    api.modify(dict(bad))
    await follower.until(2)
    assert caplog.text.count("x.json") == 2  # a new resourceVersion is a new problem report
    await follower.stop()


async def test_a_missing_configmap_is_not_a_load_until_it_is_created(token: Path, caplog) -> None:
    api = FakeApi(None)
    follower = Follower(source(api, token))
    await eventually(lambda: "does not exist" in caplog.text, "the source never reported the missing ConfigMap")
    assert follower.applied == []
    assert f"ConfigMap {NS}/{NAME} does not exist" in caplog.text and "FLYWHEEL_ROUTER_KUBE_CONFIGMAP" in caplog.text
    api.modify({"fraud.json": stored()}, kind="ADDED")
    assert set(await follower.until(1)) == {"fraud"}
    await follower.stop()


async def test_410_gone_and_dropped_watches_relist_within_a_second(token: Path) -> None:
    api = FakeApi({"fraud.json": stored()})
    api.answers["GET watch"] = [410]
    follower = Follower(source(api, token))
    await follower.until(1)
    await eventually(lambda: len(api.requests) >= 3, "the source never listed and watched again after the 410")
    calls = [(r.method, r.url.params.get("watch")) for r in api.requests]
    assert calls[:3] == [("GET", None), ("GET", "1"), ("GET", None)]  # 410 -> list again -> watch
    # The watch breaks while the ConfigMap changes and the API server is away for a moment: the change is
    # picked up by the list that follows, within a second.
    api.configmap = api._object({"fraud.json": stored(candidate={"version": "v2"}, candidateWeight=1)})
    api.answers["GET list"] = [503, 503, 503]
    changed = asyncio.get_running_loop().time()
    api.push("ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"})
    second = await follower.until(2)
    assert second["fraud"].candidate is not None
    assert asyncio.get_running_loop().time() - changed < 1.0
    assert not api.answers["GET list"]
    await follower.stop()


async def test_put_stores_the_next_generation_with_the_configmaps_resource_version(token: Path) -> None:
    api = FakeApi({"other": "kept"})
    src = source(api, token)
    first = await src.put(route())
    assert first.generation == 1 and first.updated_at is not None and first.updated_at.tzinfo is not None
    put = next(r for r in api.requests if r.method == "PUT")
    body = orjson.loads(put.content)
    assert put.url.path == f"{COLLECTION}/{NAME}" and body["metadata"]["resourceVersion"] == "101"
    assert body["data"]["other"] == "kept"
    assert orjson.loads(api.configmap["data"]["fraud.json"]) == first.to_json()
    second = await src.put(route(generation=1, candidate={"version": "v2"}, candidateWeight=5))
    assert second.generation == 2
    await src.aclose()


async def test_a_stale_generation_is_a_conflict_naming_both(token: Path) -> None:
    api = FakeApi({"fraud.json": stored(generation=3)})
    src = source(api, token)
    with pytest.raises(Conflict, match="route 'fraud' is at generation 3, the write was based on 2"):
        await src.put(route(generation=2))
    with pytest.raises(Conflict, match="at generation 0, the write was based on 1"):
        await src.put(route(model="new", generation=1))
    assert not [r for r in api.requests if r.method == "PUT"]
    await src.aclose()


async def test_an_api_409_is_retried_once_from_the_read_then_is_a_conflict(token: Path) -> None:
    api = FakeApi({})
    src = source(api, token)
    api.answers["PUT"] = [409]
    assert (await src.put(route())).generation == 1
    assert [r.method for r in api.requests] == ["GET", "PUT", "GET", "PUT"]
    api.answers["PUT"] = [409, 409]
    with pytest.raises(Conflict, match="changed during the write twice"):
        await src.put(route(generation=1))
    await src.aclose()


async def test_a_403_names_the_missing_rbac_verb_and_other_failures_the_configmap(token: Path) -> None:
    api = FakeApi({})
    src = source(api, token)
    api.answers["GET"] = [403]
    with pytest.raises(RouteSourceError, match=f"lacks the RBAC verb 'get' on configmaps '{NAME}' in namespace '{NS}'"):
        await src.put(route())
    api.answers["PUT"] = [403]
    with pytest.raises(RouteSourceError, match="RBAC verb 'update'"):
        await src.put(route())
    api.answers["GET"] = [401]
    with pytest.raises(RouteSourceError, match="refused the service account token"):
        await src.put(route())
    api.answers["GET"] = [500]
    with pytest.raises(RouteSourceError, match=f"ConfigMap {NS}/{NAME}: get answered 500"):
        await src.put(route())
    api.configmap = None
    with pytest.raises(RouteSourceError, match="does not exist"):
        await src.put(route())
    await src.aclose()


async def test_an_unreachable_api_server_is_a_route_source_error(token: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    src = ConfigMapRouteSource(
        api_url="https://api.test",
        namespace=NS,
        name=NAME,
        token_file=token,
        ca_file=None,
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(RouteSourceError, match="unreachable .ConnectError: connection refused"):
        await src.put(route())
    await src.aclose()


async def test_the_token_is_read_again_for_every_request(token: Path) -> None:
    api = FakeApi({})
    src = source(api, token)
    await src.put(route())
    token.write_text("t2")  # the kubelet rotated it
    await src.put(route(generation=1))
    assert api.tokens == ["Bearer t1", "Bearer t1", "Bearer t2", "Bearer t2"]
    token.unlink()
    with pytest.raises(RouteSourceError, match="cannot read the service account token"):
        await src.put(route(generation=2))
    await src.aclose()


def test_from_settings_finds_namespace_and_api_server_as_a_pod_does(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "namespace").write_text("prod\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    settings = Settings(kube_token_file=tmp_path / "token", kube_ca_file=None, kube_configmap="r")
    src = ConfigMapRouteSource.from_settings(settings)
    assert (src.namespace, src.name, str(src._client.base_url)) == ("prod", "r", "https://[fd00::1]:6443")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="FLYWHEEL_ROUTER_KUBE_API_URL"):
        ConfigMapRouteSource.from_settings(settings)
    with pytest.raises(ConfigError, match="FLYWHEEL_ROUTER_KUBE_NAMESPACE"):
        ConfigMapRouteSource.from_settings(Settings(kube_token_file=tmp_path / "none" / "token"))
    with pytest.raises(ConfigError, match="FLYWHEEL_ROUTER_KUBE_CA_FILE"):
        ConfigMapRouteSource.from_settings(
            Settings(
                kube_token_file=tmp_path / "token", kube_api_url="https://a", kube_ca_file=tmp_path / "missing.crt"
            )
        )
