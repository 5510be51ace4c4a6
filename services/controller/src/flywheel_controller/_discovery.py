"""The router's replicas, found in its Service's EndpointSlices.

Each router replica counts only the traffic it served, so the controller reads the statistics of every ready
replica and sums them; going through the Service would reach one replica at random. EndpointSlices (not the
older Endpoints) are what kube-proxy itself follows; an endpoint counts unless it says `ready: false` (an
absent condition means ready, as the API documents). A dual-stack Service has one slice per address family
naming the same pods: each replica is counted once.
"""

from __future__ import annotations

from typing import Any

from ._kube import KubeClient


async def router_replicas(
    client: KubeClient, namespace: str, service: str, port_name: str | None, port: int, scheme: str = "http"
) -> list[tuple[str, str]]:
    """(replica name, base URL) of every ready endpoint of `service`, sorted by name. The replica name is the
    pod's (targetRef) or else the address; the port is the slice's port named `port_name` when there is one,
    else `port`; `scheme` is the admin URL's (https when the router serves TLS). StoreError when the slices
    cannot be listed (naming the RBAC verb when that is why)."""
    body = await client.request(
        "GET",
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        params={"labelSelector": f"kubernetes.io/service-name={service}"},
    )
    replicas: dict[str, str] = {}
    # IPv4 slices first, so a dual-stack replica is reached at its IPv4 address.
    for endpoint_slice in sorted(body.get("items") or [], key=lambda s: str(s.get("addressType") or "")):
        slice_port = _port(endpoint_slice, port_name, port)
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            address = addresses[0]  # the API: all addresses of an endpoint are fungible
            name = (endpoint.get("targetRef") or {}).get("name") or address
            host = f"[{address}]" if ":" in address else address
            replicas.setdefault(name, f"{scheme}://{host}:{slice_port}")
    return sorted(replicas.items())


def _port(endpoint_slice: dict[str, Any], port_name: str | None, default: int) -> int:
    if port_name is not None:
        for entry in endpoint_slice.get("ports") or []:
            if entry.get("name") == port_name and entry.get("port"):
                return int(entry["port"])
    return default
