"""The lean HTTP/1.1 client against a real uvicorn server: keep-alive, framing, stale connections, faults."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn

from flywheel_contracts.ports import free_port
from flywheel_router._h1 import H1Upstreams
from flywheel_router._upstream import UpstreamFailure

from conftest import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class App:
    """Echoes the request; paths choose the framing and behaviour of the answer."""

    def __init__(self) -> None:
        self.clients: set[tuple] = set()
        self.release = asyncio.Event()
        """What a `/slow` answer waits for: set by the fixture at the end, after the client gave up."""
        self.server: uvicorn.Server | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.clients.add(tuple(scope["client"]))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/slow":
            await self.release.wait()
        headers = [(b"content-type", b"application/octet-stream"), (b"x-Echo-Method", scope["method"].encode())]
        if path == "/close":
            headers.append((b"connection", b"close"))
        if path == "/chunked":
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            for part in (b"ab", b"cd", b""):
                await send({"type": "http.response.body", "body": part, "more_body": bool(part)})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})



@pytest.fixture
async def server():
    app, port = App(), free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", timeout_keep_alive=1)
    server = uvicorn.Server(config)
    server.capture_signals = lambda: __import__("contextlib").nullcontext()
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), "the test server never started")
    assert not task.done(), "the test server stopped at start"
    app.server = server
    yield app, f"http://127.0.0.1:{port}"
    app.release.set()
    server.should_exit = True
    await task


async def test_a_body_round_trips_and_the_connection_is_kept_alive(server) -> None:
    app, base = server
    client = H1Upstreams(1.0, 5.0, 4)
    for i in range(5):
        answer = await client.send("POST", f"{base}/echo?i={i}", [(b"x-a", b"1")], b"payload %d" % i)
        assert answer.status == 200 and answer.body == b"payload %d" % i
        assert (b"x-echo-method", b"POST") in answer.headers  # names lower-cased
    assert len(app.clients) == 1
    await client.aclose()


async def test_chunked_answers_are_read_whole(server) -> None:
    _, base = server
    client = H1Upstreams(1.0, 5.0, 4)
    answer = await client.send("GET", f"{base}/chunked", [], b"")
    assert answer.status == 201 and answer.body == b"abcd"
    await client.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced_without_a_failure(server) -> None:
    app, base = server
    client = H1Upstreams(1.0, 5.0, 4)
    await client.send("POST", f"{base}/echo", [], b"1")
    # The server closes the idle connection after its keep-alive timeout (1 s); the client is not told.
    await eventually(lambda: not app.server.server_state.connections, "the server never closed the idle connection")
    answer = await client.send("POST", f"{base}/echo", [], b"2")
    assert answer.body == b"2" and len(app.clients) == 2
    await client.aclose()


async def test_connection_close_answers_are_not_reused(server) -> None:
    app, base = server
    client = H1Upstreams(1.0, 5.0, 4)
    await client.send("GET", f"{base}/close", [], b"")
    await client.send("GET", f"{base}/close", [], b"")
    assert len(app.clients) == 2
    await client.aclose()


async def test_concurrency_is_bounded_by_the_pool(server) -> None:
    app, base = server
    client = H1Upstreams(1.0, 5.0, 3)
    answers = await asyncio.gather(*(client.send("POST", f"{base}/echo", [], b"%d" % i) for i in range(30)))
    assert sorted(int(a.body) for a in answers) == list(range(30))
    assert len(app.clients) <= 3
    await client.aclose()


async def test_a_slow_answer_times_out_and_its_connection_is_dropped(server) -> None:
    app, base = server
    client = H1Upstreams(1.0, 0.2, 4)
    with pytest.raises(UpstreamFailure) as failure:
        await client.send("GET", f"{base}/slow", [], b"")
    assert failure.value.kind == "timeout"
    assert (await client.send("POST", f"{base}/echo", [], b"ok")).body == b"ok"
    assert len(app.clients) == 2
    await client.aclose()


async def test_a_refused_connection_is_a_connect_failure() -> None:
    client = H1Upstreams(1.0, 1.0, 4)
    with pytest.raises(UpstreamFailure) as failure:
        await client.send("GET", f"http://127.0.0.1:{free_port()}/x", [], b"")
    assert failure.value.kind == "connect"
