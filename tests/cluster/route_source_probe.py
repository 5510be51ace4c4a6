"""The router's configmap route source against a real API server, as the router's ServiceAccount.

Run by test_router.py with the router's own interpreter (services/router/.venv/bin/python: the router is not a
dependency of tests/cluster), arguments as JSON on argv[1]. It prints one JSON object of observations; the test
asserts on them. Two sources share the ConfigMap, as two router replicas do: a follower running `run()` and a
writer calling `put()`; a third party (kubectl patch) writes too. The follower's requests are recorded, so the
test can tell a change that came on the open watch from one a new list found, without timing anything.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flywheel_contracts import Route
from flywheel_router import Conflict, RouteSourceError
from flywheel_router._store_kube import ConfigMapRouteSource


class Recording(httpx.AsyncBaseTransport):
    """The real transport to the API server, noting each request as "list", "watch" or its method."""

    def __init__(self, ca_file: str) -> None:
        self.inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=ca_file))
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        watch = request.url.params.get("watch") in ("1", "true")
        self.requests.append("watch" if watch else "list" if request.method == "GET" else request.method)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """A bound on a stuck probe, not a claim about speed (the test checks how a change arrived instead)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def main(args: dict) -> dict:
    def source(name: str = args["configmap"], transport: httpx.AsyncBaseTransport | None = None) -> ConfigMapRouteSource:
        return ConfigMapRouteSource(api_url=args["api_url"], namespace=args["namespace"], name=name,
                                    token_file=Path(args["token_file"]), ca_file=Path(args["ca_file"]),
                                    transport=transport)

    out: dict = {}
    seen: list[dict] = []
    recording = Recording(args["ca_file"])
    follower, writer = source(transport=recording), source()

    def latest() -> dict:
        return seen[-1] if seen else {}

    task = asyncio.create_task(follower.run(lambda routes: seen.append({m: r.to_json() for m, r in routes.items()})))
    try:
        await until("the first load", lambda: bool(seen))
        out["first"] = latest()

        stored = await writer.put(Route.model_validate({
            "model": "fraud", "generation": 0, "stable": {"version": "v1"},
            "candidate": {"version": "v2"}, "candidateWeight": 10}))
        out["put"] = stored.to_json()
        await until("the follower to apply the put", lambda: latest().get("fraud", {}).get("generation") == 1)

        try:
            await writer.put(Route.model_validate({"model": "fraud", "generation": 0, "stable": {"version": "v3"}}))
            out["stale_put"] = "accepted"
        except Conflict as e:
            out["stale_put"] = f"Conflict: {e}"

        other = Route.model_validate({"model": "chargeback", "generation": 1, "stable": {"version": "v7"}})
        patch = {"data": {"chargeback.json": json.dumps(other.to_json())}}
        subprocess.run([args["kubectl"], "patch", "configmap", args["configmap"], "-n", args["namespace"],
                        "--type", "merge", "-p", json.dumps(patch)], check=True, capture_output=True)
        await until("the follower to apply kubectl's patch", lambda: "chargeback" in latest())
        out["last"] = latest()
        out["follower_requests"] = list(recording.requests)

        try:
            await source("not-the-routes").put(other)
            out["other_configmap"] = "allowed"
        except RouteSourceError as e:
            out["other_configmap"] = str(e)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        out["follower_ended"] = "cancelled" if task.cancelled() else repr(task.exception())
        await follower.aclose()
        await writer.aclose()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
