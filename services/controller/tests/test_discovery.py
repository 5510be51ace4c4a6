"""Router replicas from the router Service's EndpointSlices: ready endpoints only, named after their pods, on
the named port, IPv6 bracketed, dual-stack pods once, and a missing RBAC rule named."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flywheel_controller._discovery import router_replicas
from flywheel_controller._kube import KubeClient
from flywheel_controller._ports import StoreError

from fake_apiserver import NS, FakeApiServer

pytestmark = pytest.mark.anyio
SERVICE = "fw-flywheel-router"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    async with api.client() as client:
        yield client


def endpoint(address: str, pod: str | None = None, ready: bool | None = True) -> dict:
    found: dict = {"addresses": [address]}
    if ready is not None:
        found["conditions"] = {"ready": ready, "serving": ready, "terminating": False}
    if pod is not None:
        found["targetRef"] = {"kind": "Pod", "name": pod, "namespace": NS}
    return found


def add_slice(
    api: FakeApiServer,
    name: str,
    endpoints: list[dict],
    service: str = SERVICE,
    address_type: str = "IPv4",
    ports: list[dict] | None = None,
) -> None:
    api.add(
        "endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8000}, {"name": "admin", "port": 8001}],
        },
    )


async def test_ready_endpoints_are_replicas_named_after_their_pods_on_the_named_port(api, client) -> None:
    add_slice(api, "router-abc", [endpoint("10.0.0.7", "router-2"), endpoint("10.0.0.5", "router-1")])
    assert await router_replicas(client, NS, SERVICE, "admin", 9999) == [
        ("router-1", "http://10.0.0.5:8001"),
        ("router-2", "http://10.0.0.7:8001"),
    ]
    [request] = api.requests
    assert request.url.path == f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    assert request.url.params["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"


async def test_not_ready_endpoints_are_skipped_and_an_absent_condition_counts_as_ready(api, client) -> None:
    add_slice(
        api,
        "router-abc",
        [
            endpoint("10.0.0.5", "router-1", ready=False),
            endpoint("10.0.0.6", "router-2", ready=None),
            endpoint("10.0.0.8"),  # no targetRef: named by its address
        ],
    )
    assert await router_replicas(client, NS, SERVICE, "admin", 8001) == [
        ("10.0.0.8", "http://10.0.0.8:8001"),
        ("router-2", "http://10.0.0.6:8001"),
    ]


async def test_the_given_port_when_no_name_is_asked_or_none_matches(api, client) -> None:
    add_slice(api, "router-abc", [endpoint("10.0.0.5", "router-1")], ports=[{"name": "http", "port": 8000}])
    assert await router_replicas(client, NS, SERVICE, None, 8001) == [("router-1", "http://10.0.0.5:8001")]
    assert await router_replicas(client, NS, SERVICE, "admin", 8002) == [("router-1", "http://10.0.0.5:8002")]


async def test_ipv6_addresses_are_bracketed_and_a_dual_stack_pod_counts_once(api, client) -> None:
    add_slice(api, "router-v6", [endpoint("fd00::5", "router-1"), endpoint("fd00::9", "router-9")], address_type="IPv6")
    add_slice(api, "router-v4", [endpoint("10.0.0.5", "router-1")])
    assert await router_replicas(client, NS, SERVICE, "admin", 8001) == [
        ("router-1", "http://10.0.0.5:8001"),  # IPv4 preferred
        ("router-9", "http://[fd00::9]:8001"),
    ]


async def test_slices_of_other_services_are_ignored_and_none_means_no_replicas(api, client) -> None:
    add_slice(api, "predictor-abc", [endpoint("10.0.0.5", "predictor-1")], service="fw-flywheel-predictor")
    assert await router_replicas(client, NS, SERVICE, "admin", 8001) == []


async def test_a_403_names_the_list_endpointslices_rule(api, client) -> None:
    api.fail(403, "GET", "endpointslices")
    with pytest.raises(StoreError) as caught:
        await router_replicas(client, NS, SERVICE, "admin", 8001)
    assert "lacks the RBAC verb 'list' on endpointslices in namespace 'ml'" in str(caught.value)
    assert 'apiGroups ["discovery.k8s.io"]' in str(caught.value)
