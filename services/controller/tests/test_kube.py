"""KubeClient and KubeRolloutStore against the fake API server: credentials, errors that say what to fix,
list then watch (bookmarks, re-opened and re-listed watches, back-off), status merge patches, finalizers with
a precondition, and Events."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flywheel_contracts import FINALIZER, ModelRolloutStatus, Phase
from flywheel_controller._kube import KubeClient, NotFoundError
from flywheel_controller._ports import ConflictError, StoreError
from flywheel_controller._store_kube import KubeRolloutStore
from flywheel_controller._types import Event

from fake_apiserver import API_URL, NS, FakeApiServer, rollout_object

pytestmark = pytest.mark.anyio

# A self-signed certificate and its key (test material only), used both as a CA and as a client certificate.
CERT = """-----BEGIN CERTIFICATE-----
MIIBhjCCAS2gAwIBAgIUdosU7inn4YzJSfffO6XhUbtE3sgwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNZmx5d2hlZWwtdGVzdDAgFw0yNjExMzAyMzI4NTFaGA8yMTI2
MTEwNjIzMjg1MVowGDEWMBQGA1UEAwwNZmx5d2hlZWwtdGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABOHf5TTHQiHEF/8aWn2VqFbrLmXN1/JbKXttehvt7r5T
UvLd1hxWbrVqKt8LI8NgF1OKRTXca3SFA7EI2mD/y7KjUzBRMB0GA1UdDgQWBBSH
DxF/J0k+bnlR0gmvRp17HLipxjAfBgNVHSMEGDAWgBSHDxF/J0k+bnlR0gmvRp17
HLipxjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIH5Na+0e8QSh
YwuKTEjSo0kG/QYJsuSjGiQrKQozVXRMAiAzBxTF2xjv/6lU8Ew20yo00xYRelXg
V68KuE19YnStcw==
-----END CERTIFICATE-----
"""
KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9dzGkIYdaxDvhJIi
0mxZj/DSkPYcO8Ll6aXWGWtjAlqhRANCAATh3+U0x0IhxBf/Glp9lahW6y5lzdfy
Wyl7bXob7e6+U1Ly3dYcVm61airfCyPDYBdTikU13Gt0hQOxCNpg/8uy
-----END PRIVATE KEY-----
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("t1\n")
    return path


@pytest.fixture
def api() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
async def store(api: FakeApiServer, token: Path) -> AsyncIterator[KubeRolloutStore]:
    client = api.client(token)
    yield KubeRolloutStore(client, NS, backoff_initial_s=0.001, backoff_max_s=0.004)
    await client.aclose()


class Follower:
    """store.changes() in a task, recording every key."""

    def __init__(self, store: KubeRolloutStore) -> None:
        self.keys: list[str] = []
        self.task = asyncio.create_task(self._follow(store))

    async def _follow(self, store: KubeRolloutStore) -> None:
        async for key in store.changes():
            self.keys.append(key)

    async def until(self, count: int, timeout: float = 2.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(self.keys) < count:
                await asyncio.sleep(0.002)
        return self.keys

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


# ------------------------------------------------------------------------------------------------ client


async def test_the_token_is_read_from_its_file_on_every_request_because_it_rotates(api, token) -> None:
    async with api.client(token) as client:
        await client.request("GET", f"/apis/flywheel.dev/v1alpha1/namespaces/{NS}/modelrollouts")
        token.write_text("t2")
        await client.request("GET", f"/apis/flywheel.dev/v1alpha1/namespaces/{NS}/modelrollouts")
    assert [r.headers["authorization"] for r in api.requests] == ["Bearer t1", "Bearer t2"]


async def test_a_403_names_the_rbac_rule_the_service_account_lacks(api, token) -> None:
    api.fail(403)
    async with api.client(token) as client:
        with pytest.raises(StoreError) as caught:
            await client.request(
                "PATCH",
                f"/apis/flywheel.dev/v1alpha1/namespaces/{NS}/modelrollouts/x/status",
                json_body={},
                merge_patch=True,
            )
    assert "the controller's ServiceAccount lacks the RBAC verb 'patch' on modelrollouts/status in namespace 'ml'" in (
        str(caught.value)
    )
    assert 'apiGroups ["flywheel.dev"], resources ["modelrollouts/status"], verbs ["patch"]' in str(caught.value)


@pytest.mark.parametrize(
    ("method", "path", "params", "rule"),
    [
        ("GET", "/apis/flywheel.dev/v1alpha1/namespaces/ml/modelrollouts", {"watch": "1"}, "'watch' on modelrollouts"),
        ("GET", "/apis/flywheel.dev/v1alpha1/namespaces/ml/modelrollouts", None, "'list' on modelrollouts"),
        ("GET", "/apis/flywheel.dev/v1alpha1/namespaces/ml/modelrollouts/x", None, "'get' on modelrollouts"),
        ("POST", "/api/v1/namespaces/ml/events", None, "'create' on events"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/c", None, "'update' on leases"),
    ],
)
async def test_the_rbac_verb_in_a_403_follows_the_request(api, token, method, path, params, rule) -> None:
    api.fail(403)
    async with api.client(token) as client:
        with pytest.raises(StoreError, match=rule):
            await client.request(method, path, params=params, json_body={} if method in ("POST", "PUT") else None)


async def test_a_401_says_to_check_the_token(api, token) -> None:
    api.fail(401)
    async with api.client(token) as client:
        with pytest.raises(StoreError, match=f"refused the credentials \\(401\\): the token in {token} is expired"):
            await client.request("GET", f"/api/v1/namespaces/{NS}/events")


async def test_an_unreachable_api_server_is_named_by_its_url(api, token) -> None:
    api.down = True
    async with api.client(token) as client:
        with pytest.raises(StoreError, match=f"the API server at {API_URL} is unreachable \\(ConnectError"):
            await client.request("GET", f"/api/v1/namespaces/{NS}/events")


async def test_a_409_is_a_conflict_and_a_404_not_found(api, token) -> None:
    api.fail(409)
    async with api.client(token) as client:
        with pytest.raises(ConflictError):
            await client.request("PUT", f"/api/v1/namespaces/{NS}/configmaps/x", json_body={})
        with pytest.raises(NotFoundError):
            await client.request("GET", f"/api/v1/namespaces/{NS}/configmaps/x")


async def test_an_unreadable_token_file_says_which(api, tmp_path) -> None:
    async with api.client(tmp_path / "missing") as client:
        with pytest.raises(StoreError, match="cannot read the service account token .*missing"):
            await client.request("GET", f"/api/v1/namespaces/{NS}/events")


async def test_in_cluster_uses_the_service_address_and_the_account_mount(api, tmp_path, monkeypatch) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("ml\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = KubeClient.in_cluster(transport=httpx.MockTransport(api), account_dir=tmp_path)
    assert client.api_url == "https://[fd00::1]:443" and client.namespace == "ml"
    await client.request("GET", f"/api/v1/namespaces/{NS}/events")
    assert api.requests[0].headers["authorization"] == "Bearer sa-token"
    await client.aclose()


async def test_in_cluster_outside_a_pod_says_so(monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(StoreError, match="not in a pod"):
        KubeClient.in_cluster()


def write_kubeconfig(path: Path, user: dict, cluster_extra: dict | None = None) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "kind", "user": "me", "namespace": "ml"}}],
        "clusters": [{"name": "kind", "cluster": {"server": API_URL, **(cluster_extra or {})}}],
        "users": [{"name": "me", "user": user}],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


async def test_a_kubeconfig_with_a_token_and_ca_data(api, tmp_path) -> None:
    ca = base64.b64encode(CERT.encode()).decode()
    path = write_kubeconfig(tmp_path / "config", {"token": "kc-token"}, {"certificate-authority-data": ca})
    client = KubeClient.from_kubeconfig(path, transport=httpx.MockTransport(api))
    assert client.api_url == API_URL and client.namespace == "ml"
    await client.request("GET", f"/api/v1/namespaces/{NS}/events")
    assert api.requests[0].headers["authorization"] == "Bearer kc-token"
    await client.aclose()


async def test_a_kubeconfig_with_client_certificate_data_authenticates_without_a_token(api, tmp_path) -> None:
    (tmp_path / "ca.crt").write_text(CERT)
    user = {
        "client-certificate-data": base64.b64encode(CERT.encode()).decode(),
        "client-key-data": base64.b64encode(KEY.encode()).decode(),
    }
    before = set(os.listdir(tempfile.gettempdir()))
    client = KubeClient.from_kubeconfig(
        write_kubeconfig(tmp_path / "config", user, {"certificate-authority": "ca.crt"}),
        transport=httpx.MockTransport(api),
    )
    leftovers = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("flywheel-kube-")}
    assert leftovers == set()  # the key went through temporary files that are gone
    await client.request("GET", f"/api/v1/namespaces/{NS}/events")
    assert "authorization" not in api.requests[0].headers
    await client.aclose()


def test_a_kubeconfig_whose_user_runs_an_exec_plugin_is_refused_with_a_reason(tmp_path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"exec": {"command": "aws"}})
    with pytest.raises(StoreError, match="exec or auth-provider plugin"):
        KubeClient.from_kubeconfig(path)


def test_a_kubeconfig_naming_a_missing_context_says_so(tmp_path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"token": "x"})
    with pytest.raises(StoreError, match="has no context named 'prod'"):
        KubeClient.from_kubeconfig(path, context="prod")


def test_a_kubeconfig_with_bad_key_data_names_the_context(tmp_path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(CERT.encode()).decode(),
        "client-key-data": base64.b64encode(b"not a key").decode(),
    }
    with pytest.raises(StoreError, match="TLS material of context 'dev'"):
        KubeClient.from_kubeconfig(write_kubeconfig(tmp_path / "config", user))


async def test_insecure_skip_tls_verify_needs_no_ca(api, tmp_path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"token": "x"}, {"insecure-skip-tls-verify": True})
    async with KubeClient.from_kubeconfig(path, transport=httpx.MockTransport(api)) as client:
        await client.request("GET", f"/api/v1/namespaces/{NS}/events")


# ------------------------------------------------------------------------------------------------- store


async def test_list_reads_the_namespace_and_skips_an_invalid_rollout_logging_it_once(api, store, caplog) -> None:
    api.add("modelrollouts", rollout_object("a"))
    api.add("modelrollouts", rollout_object("b", candidate={"version": "v1"}))  # same as the stable: invalid
    rollouts = await store.list()
    assert [r.key for r in rollouts] == ["ml/a"] and rollouts[0].spec.model == "fraud"
    await store.list()
    assert caplog.text.count("ModelRollout ml/b is not valid") == 1
    assert api.requests[0].url.path == "/apis/flywheel.dev/v1alpha1/namespaces/ml/modelrollouts"


async def test_changes_watch_from_the_lists_resource_version_and_yield_each_change(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    await store.list()
    listed_rv = store._resource_version
    follower = Follower(store)
    await until(lambda: api.open_watches == 1)
    watch = api.calls("GET")[-1]
    assert dict(watch.url.params) == {
        "watch": "1",
        "resourceVersion": listed_rv,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "300",
    }
    api.add("modelrollouts", rollout_object("b"))
    api.modify("modelrollouts", "a", lambda o: o["spec"].update(model="fraud2"))
    api.delete("modelrollouts", "b")
    assert await follower.until(3) == ["ml/b", "ml/a", "ml/b"]
    await follower.stop()


async def test_without_a_list_first_changes_yield_every_listed_key(api, store) -> None:
    api.add("modelrollouts", rollout_object("b"))
    api.add("modelrollouts", rollout_object("a"))
    follower = Follower(store)
    assert await follower.until(2) == ["ml/a", "ml/b"]
    await follower.stop()


async def test_a_watch_the_server_ends_is_reopened_after_the_last_bookmark_without_a_list(api, store) -> None:
    await store.list()
    follower = Follower(store)
    await until(lambda: api.open_watches == 1)
    bookmark = api.bookmark()
    await until(lambda: store._resource_version == bookmark)
    api.end_watches()
    await until(lambda: len(api.calls("GET")) == 3)
    reopened = api.calls("GET")[-1]
    assert reopened.url.params["watch"] == "1" and reopened.url.params["resourceVersion"] == bookmark
    assert follower.keys == []  # a bookmark is no change
    await follower.stop()


async def test_a_410_gone_lists_again_and_yields_every_key(api, store, caplog) -> None:
    caplog.set_level(logging.INFO)
    api.add("modelrollouts", rollout_object("a"))
    await store.list()
    follower = Follower(store)
    await until(lambda: api.open_watches == 1)
    api.compact()  # the open watch gets an ERROR 410 event
    assert await follower.until(1) == ["ml/a"]
    assert "expired (410 Gone): listing again" in caplog.text
    await until(lambda: api.open_watches == 1)
    api.fail(410, "GET", "modelrollouts")
    api.end_watches()  # ... and the re-opened one is answered 410 outright
    assert await follower.until(2) == ["ml/a", "ml/a"]
    await follower.stop()


async def test_a_broken_stream_lists_again_reporting_what_changed_or_vanished_meanwhile(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    api.add("modelrollouts", rollout_object("b"))
    await store.list()
    follower = Follower(store)
    await until(lambda: api.open_watches == 1)
    api.down = True
    api.break_watches()
    await until(lambda: len(api.calls("GET")) >= 3)  # a failed list at least
    api.down = False
    api.objects.pop(("modelrollouts", NS, "b"))  # deleted while no watch was open: no event will say so
    assert await follower.until(2) == ["ml/a", "ml/b"]
    await follower.stop()


async def test_changes_back_off_while_the_api_server_is_down_and_never_raise(api, store, caplog) -> None:
    api.add("modelrollouts", rollout_object("a"))
    api.down = True
    follower = Follower(store)
    await until(lambda: len(api.requests) >= 6)
    assert not follower.task.done() and follower.keys == []
    assert caplog.text.count("unreachable") == 1  # logged when it starts failing, not per attempt
    api.down = False
    assert await follower.until(1) == ["ml/a"]
    await follower.stop()


async def test_get_returns_the_rollout_or_none_when_it_does_not_exist(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    rollout = await store.get(NS, "a")
    assert rollout is not None and rollout.uid and rollout.resource_version
    assert await store.get(NS, "nope") is None


async def test_write_status_patches_the_subresource_with_nulls_and_never_intent(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    api.modify(
        "modelrollouts",
        "a",
        lambda o: o.update(
            status={
                "phase": "Progressing",
                "message": "at 10%",
                "intent": {"id": "p1", "action": "promote"},
            }
        ),
    )
    rollout = await store.get(NS, "a")
    assert rollout is not None
    status = ModelRolloutStatus(phase=Phase.PAUSED, pausedReason="a pause step")
    written = await store.write_status(rollout, status)
    patch = api.calls("PATCH")[-1]
    assert patch.url.path.endswith("/modelrollouts/a/status")
    assert patch.headers["content-type"] == "application/merge-patch+json"
    body = json.loads(patch.content)
    assert "intent" not in body["status"] and body["status"]["message"] is None
    assert written.status.phase == Phase.PAUSED and written.status.message is None  # cleared by the null
    assert written.status.intent is not None and written.status.intent.id == "p1"  # a person's, untouched
    assert "message" not in api.get("modelrollouts", "a")["status"]


async def test_write_status_sends_no_nulls_inside_lists(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    rollout = await store.get(NS, "a")
    status = ModelRolloutStatus.model_validate(
        {
            "decisions": [{"time": "2026-11-30T12:00:00Z", "action": "SetWeight", "message": "10%"}],
        }
    )
    await store.write_status(rollout, status)
    decision = json.loads(api.calls("PATCH")[-1].content)["status"]["decisions"][0]
    assert decision == {"time": "2026-11-30T12:00:00Z", "action": "SetWeight", "message": "10%"}


async def test_set_finalizer_sends_the_whole_list_with_the_resource_version(api, store) -> None:
    obj = rollout_object("a")
    obj["metadata"]["finalizers"] = ["example.com/other"]
    api.add("modelrollouts", obj)
    rollout = await store.get(NS, "a")
    held = await store.set_finalizer(rollout, True)
    body = json.loads(api.calls("PATCH")[-1].content)
    assert body == {
        "metadata": {"finalizers": ["example.com/other", FINALIZER], "resourceVersion": rollout.resource_version}
    }
    assert held.finalizers == ("example.com/other", FINALIZER)
    assert await store.set_finalizer(held, True) is held  # already so: no request
    assert len(api.calls("PATCH")) == 1
    released = await store.set_finalizer(held, False)
    assert released.finalizers == ("example.com/other",)


async def test_set_finalizer_on_a_stale_rollout_is_a_conflict(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    stale = await store.get(NS, "a")
    api.modify("modelrollouts", "a", lambda o: o["spec"].update(model="other"))
    with pytest.raises(ConflictError):
        await store.set_finalizer(stale, True)


async def test_removing_the_finalizer_of_a_deleted_rollout_lets_it_go(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    held = await store.set_finalizer(await store.get(NS, "a"), True)
    api.delete("modelrollouts", "a")
    deleting = await store.get(NS, "a")
    assert deleting is not None and deleting.deletion_timestamp is not None
    await store.set_finalizer(deleting, False)
    assert api.get("modelrollouts", "a") is None and held.finalizers == (FINALIZER,)


async def test_post_event_posts_a_core_event_on_the_rollout(api, token, monkeypatch) -> None:
    monkeypatch.setenv("HOSTNAME", "flywheel-controller-7d9f-abcde")
    api.add("modelrollouts", rollout_object("a"))
    async with api.client(token) as client:
        store = KubeRolloutStore(client, NS)
        rollout = await store.get(NS, "a")
        await store.post_event(rollout, Event("RolledBack", "x" * 2000, "Warning"))
    [event] = api.list("events")
    assert event["metadata"]["name"].startswith("a.")
    assert event["involvedObject"] == {
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "ModelRollout",
        "name": "a",
        "namespace": NS,
        "uid": rollout.uid,
        "resourceVersion": rollout.resource_version,
    }
    assert (event["reason"], event["type"], len(event["message"]), event["count"]) == ("RolledBack", "Warning", 1024, 1)
    assert event["source"] == {"component": "flywheel-controller"}
    assert event["reportingComponent"] == "flywheel.dev/controller"
    assert event["reportingInstance"] == "flywheel-controller-7d9f-abcde"
    assert event["eventTime"].endswith("Z") and len(event["eventTime"]) == len("2026-11-30T12:00:00.000000Z")
    assert event["firstTimestamp"] == event["lastTimestamp"] and len(event["firstTimestamp"]) == 20


async def test_post_event_failures_are_store_errors_naming_the_rule(api, store) -> None:
    api.add("modelrollouts", rollout_object("a"))
    rollout = await store.get(NS, "a")
    api.fail(403, "POST", "events")
    with pytest.raises(StoreError, match="lacks the RBAC verb 'create' on events in namespace 'ml'"):
        await store.post_event(rollout, Event("Started", "go"))
