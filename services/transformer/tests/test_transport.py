"""The lean HTTP/1.1 transport (_transport) against a real uvicorn server: answers, keep-alive, and httpx's errors."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flywheel_transformer._transport import DirectClient, LeanTransport

from servers import ThreadedServer


class EchoServer(ThreadedServer):
    """Echoes what it got (method, path, query, headers, body) and the client's port; other routes misbehave."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        super().__init__([Route("/echo", self.echo, methods=["GET", "POST"]),
                          Route("/chunked", self.chunked), Route("/empty", self.empty, methods=["POST"]),
                          Route("/hold", self.hold)])

    async def echo(self, request: Request) -> Response:
        self.ports.append(request.client.port if request.client else 0)
        return JSONResponse({"method": request.method, "path": request.url.path, "query": request.url.query,
                             "auth": request.headers.get("authorization"), "body": (await request.body()).decode()},
                            headers={"x-echo": "1"})

    async def chunked(self, request: Request) -> Response:
        async def parts():
            for i in range(3):
                yield f"part{i};".encode()
        return StreamingResponse(parts(), media_type="text/plain")

    async def empty(self, request: Request) -> Response:
        return Response(status_code=204)

    async def hold(self, request: Request) -> Response:
        await self.held()
        return Response("late")


@pytest.fixture
def server():
    with EchoServer() as running:
        yield running


def client(**kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), timeout=kwargs.pop("timeout", 5.0), **kwargs)


def test_a_post_and_its_answer_arrive_whole_and_the_connection_is_kept(server):
    async def go():
        async with client(base_url=server.url) as http:
            first = await http.post("/echo?x=1", json={"a": [1, 2.5, "é"]}, headers={"authorization": "Bearer t"})
            second = await http.get("/echo")
            return first, second

    first, second = asyncio.run(go())
    assert first.status_code == 200 and first.headers["x-echo"] == "1" and first.http_version == "HTTP/1.1"
    echoed = first.json()
    assert echoed["method"] == "POST" and echoed["path"] == "/echo" and echoed["query"] == "x=1"
    assert echoed["auth"] == "Bearer t" and json.loads(echoed["body"]) == {"a": [1, 2.5, "é"]}
    assert second.json()["method"] == "GET"
    assert server.ports[0] == server.ports[1]  # one connection, kept alive


def test_chunked_and_empty_answers(server):
    async def go():
        async with client(base_url=server.url) as http:
            return await http.get("/chunked"), await http.post("/empty", content=b"x"), await http.get("/nowhere")

    chunked, empty, missing = asyncio.run(go())
    assert chunked.text == "part0;part1;part2;"
    assert empty.status_code == 204 and empty.content == b""
    assert missing.status_code == 404


def test_an_idle_connection_the_server_closed_is_not_reused(server):
    async def go():
        async with client(base_url=server.url) as http:
            await http.get("/echo")
            for transport in (http._transport,):
                for idle in transport._idle.values():
                    for connection in idle:  # as a server's keep-alive timeout does
                        connection.writer.transport.get_extra_info("socket").shutdown(socket.SHUT_RD)
            await asyncio.sleep(0.05)
            return await http.get("/echo")

    # shutting our read side makes the reader see its end at once: the same as the server's FIN arriving
    assert asyncio.run(go()).status_code == 200
    assert len(set(server.ports)) == 2


def test_failures_are_httpx_errors():
    async def refused():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, never listening: connections are refused
            async with client() as http:
                await http.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(refused())


def test_a_slow_answer_is_a_read_timeout_and_the_next_request_gets_a_fresh_connection(server):
    async def go():
        async with client(base_url=server.url, timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/hold")
            server.release()
            return await http.get("/echo")

    assert asyncio.run(go()).status_code == 200


def get_from_raw_server(answer: bytes) -> httpx.Response:
    """GET / from a server that reads the request, writes `answer` as it is and hangs up."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(reply, "127.0.0.1", 0)
        async with server, client() as http:
            return await http.get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")

    return asyncio.run(main())


def test_an_answer_that_runs_to_the_end_of_the_connection_is_whole_at_the_close():
    # What Python's http.server (HTTP/1.0) answers: no length, no chunks, the body ends when the server closes.
    accepted = get_from_raw_server(b"HTTP/1.0 202 Accepted\r\nServer: BaseHTTP/0.6\r\n\r\n")
    assert accepted.status_code == 202 and accepted.content == b""
    body = get_from_raw_server(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
    assert body.status_code == 200 and body.text == "all of it"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",  # hangs up mid-answer
    b"SMTP ready\r\n\r\n",  # not HTTP
    b"",  # nothing at all
], ids=["cut-short", "garbage", "nothing"])
def test_a_broken_answer_is_a_protocol_error(answer: bytes):
    with pytest.raises(httpx.RemoteProtocolError):
        get_from_raw_server(answer)


def test_a_cancelled_request_leaves_no_connection_behind_for_reuse(server):
    async def go():
        async with client(base_url=server.url) as http:
            task = asyncio.create_task(http.get("/hold"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            server.release()
            idle = sum(len(v) for v in http._transport._idle.values())
            return idle, await http.get("/echo")

    idle, answer = asyncio.run(go())
    assert idle == 0 and answer.status_code == 200


def test_the_direct_client_posts_json_as_httpx_would_and_refuses_nan(server):
    async def go():
        direct = DirectClient(server.url + "/", 5.0, LeanTransport())
        answer = await direct.post_json("/echo", {"a": "é", "b": [1.5]}, headers={"authorization": "Bearer t"})
        with pytest.raises(ValueError):
            await direct.post_json("/echo", {"a": float("nan")})
        await direct.aclose()
        return answer, direct.is_closed

    answer, closed = asyncio.run(go())
    echoed = answer.json()
    assert answer.status_code == 200 and str(answer.request.url) == f"{server.url}/echo" and closed
    assert echoed["auth"] == "Bearer t" and echoed["body"] == '{"a":"é","b":[1.5]}'
