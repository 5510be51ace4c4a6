"""Real HTTP servers on loopback for the transformer's process-level tests.

A small Starlette app served by uvicorn in a thread stands in for the Feast feature server and the
predictor (the repository's integration tests run the real ones), and a recording CloudEvents sink
receives the inference log. The transformer itself runs as `python -m flywheel_transformer`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flywheel_contracts.ports import free_port
from flywheel_core import schema
from flywheel_transformer._events import BATCH_CONTENT_TYPE

from conftest import ONLINE_NAMES, feast_answer

HOLD_LIMIT_S = 60.0
"""The longest a held request waits for `release()`: only a test that forgot to release ever reaches it."""

UNKNOWN_CARD = "c-unknown"
UNKNOWN_MERCHANT = "m-unknown"
AMOUNT_LOG = schema.NUMERIC_FEATURES.index("amount_log")


class ThreadedServer:
    """A Starlette app on a free loopback port, served from a daemon thread."""

    def __init__(self, routes: list[Route]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(Starlette(routes=routes), log_level="warning", lifespan="off", ws="none", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.released = threading.Event()

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # a held handler's thread would keep the server's loop from closing
        self.server.should_exit = True
        self.server.force_exit = True  # a handler still sleeping (a hung sink) must not hold the test
        self.thread.join(timeout=5)
        self.sock.close()

    def release(self) -> None:
        """Let every held request answer now; a request held after this waits for the next release()."""
        released, self.released = self.released, threading.Event()
        released.set()

    async def held(self) -> None:
        """Wait, without blocking the server's loop, until the test calls release()."""
        await asyncio.to_thread(self.released.wait, HOLD_LIMIT_S)


def refused(request: Request, token: str | None) -> Response | None:
    """A 401 (flywheel_contracts.auth's body) unless `token` is None or the request carries it as a bearer token."""
    if token is None or request.headers.get("authorization") == f"Bearer {token}":
        return None
    return JSONResponse({"error": "send Authorization: Bearer <token>", "code": "unauthorized"}, status_code=401)


class FeatureServerStub(ThreadedServer):
    """Feast's /get-online-features: card k's features derive from k; `mode` = ok | fail | hang (answers only
    once the test calls release()). The card UNKNOWN_CARD and the merchant UNKNOWN_MERCHANT are not in the
    store: their features are NOT_FOUND. With `token` set, a lookup without `Authorization: Bearer <token>`
    gets a 401."""

    def __init__(self, token: str | None = None) -> None:
        self.mode = "ok"
        self.token = token
        self.requests: list[dict[str, Any]] = []
        super().__init__([Route("/get-online-features", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        denied = refused(request, self.token)
        if denied is not None:
            return denied
        body = await request.json()
        self.requests.append(body)
        if self.mode == "fail":
            return JSONResponse({"detail": "online store unreachable"}, status_code=500)
        if self.mode == "hang":
            await self.held()
        cards, merchants = body["entities"]["card_id"], body["entities"]["merchant_id"]
        known = {
            name: [card != UNKNOWN_CARD for card in cards]
            if name in schema.CARD_FEATURES
            else [merchant != UNKNOWN_MERCHANT for merchant in merchants]
            for name in ONLINE_NAMES
        }
        values = {
            name: [float(k + 1) + i if ok else None for i, ok in enumerate(known[name])]
            for k, name in enumerate(ONLINE_NAMES)
        }
        return JSONResponse(feast_answer(cards, merchants, values))


class PredictorStub(ThreadedServer):
    """V2 infer for `fraud`: 0.9 when amount_log > 5 (amount above ~150), else 0.1. The unversioned path
    answers as version `v9`; `/versions/<v>/infer` as `v` for the versions in `served`, else 404. Each
    answer names its version in the body and in the `x-flywheel-model-version` header."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.served = {"v1", "v2"}
        super().__init__(
            [
                Route("/v2/models/fraud/infer", self.handle, methods=["POST"]),
                Route("/v2/models/fraud/versions/{version}/infer", self.handle, methods=["POST"]),
            ]
        )

    async def handle(self, request: Request) -> Response:
        self.paths.append(request.url.path)
        version = request.path_params.get("version", "v9")
        if "version" in request.path_params and version not in self.served:
            return JSONResponse({"error": f"model 'fraud' version '{version}' is not served here"}, status_code=404)
        body = await request.json()
        self.requests.append(body)
        tensor = body["inputs"][0]
        rows, width = tensor["shape"]
        data = tensor["data"]
        scores = [0.9 if data[i * width + AMOUNT_LOG] > 5 else 0.1 for i in range(rows)]
        return JSONResponse(
            {
                "model_name": "fraud",
                "model_version": version,
                "id": body.get("id"),
                "outputs": [{"name": "probability", "shape": [rows, 1], "datatype": "FP32", "data": scores}],
            },
            headers={"x-flywheel-model-version": version},
        )


class CloudEventSink(ThreadedServer):
    """Records every posted event's headers and body; answers after `delay_s`, or with `hold` set only once the
    test calls release(). With `token` set, an event without `Authorization: Bearer <token>` gets a 401 and is
    not recorded. `arrived` counts the posts that reached the handler, held ones included. With `down` set it
    is a sink in an outage, as a drift pod restarting behind a proxy looks: every post is answered 503 at once
    and not recorded (`refused` counts them). A batch-mode post (application/cloudevents-batch+json) is recorded
    as its events, each as binary mode would carry it (`ce-*` headers, the data as the body), so a test reads
    the events the same way whichever EVENT_MODE sent them; `posts` counts the posts recorded."""

    def __init__(self, delay_s: float = 0.0, token: str | None = None, hold: bool = False) -> None:
        self.delay_s = delay_s
        self.token = token
        self.hold = hold
        self.down = False
        self.refused = 0
        self.arrived = 0
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        super().__init__([Route("/", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        denied = refused(request, self.token)
        if denied is not None:
            return denied
        body = await request.body()  # before the delay: a client that gives up must not leave a traceback here
        if self.down:
            self.refused += 1
            return JSONResponse({"error": "no healthy upstream", "code": "unavailable"}, status_code=503)
        self.arrived += 1
        if self.hold:
            await self.held()
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.events.extend(as_binary(dict(request.headers), body))
        self.posts += 1
        return Response(status_code=202)

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(list(self.events)):
                return list(self.events)
            time.sleep(0.05)
        raise AssertionError(f"sink did not receive the expected events; got {len(self.events)}")


def as_binary(headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    """The events of one post, each as {"headers", "body"} in binary mode (a batch unpacked, in order)."""
    if not headers.get("content-type", "").startswith(BATCH_CONTENT_TYPE):
        return [{"headers": headers, "body": body}]
    shared = {k: v for k, v in headers.items() if k != "content-type"}
    return [
        {
            "headers": {**shared, **{f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")},
                        "content-type": event["datacontenttype"]},
            "body": json.dumps(event["data"], separators=(",", ":")).encode(),
        }
        for event in json.loads(body)
    ]


class TransformerProcess:
    """`python -m flywheel_transformer` on a free port with the given settings."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_TRANSFORMER_")}
        self.env.update({"FLYWHEEL_TRANSFORMER_HTTP_PORT": str(self.port), **env})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TransformerProcess:
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flywheel_transformer"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformer exited {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"transformer did not come up:\n{self.log_path.read_text()}")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def predict(self, instances: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/models/fraud:predict",
            json={"instances": instances},
            headers=headers or {},
            timeout=10,
            **kwargs,
        )

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total
