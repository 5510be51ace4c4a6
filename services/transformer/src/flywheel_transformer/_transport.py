"""A lean HTTP/1.1 transport under the transformer's httpx clients (features, predictor, drift, stream step).

Why: httpx's own transport (httpcore over h11 and anyio) was about 40 % of the transformer's CPU under load
(py-spy, docs/benchmarks.md, "Where the transformer's CPU went"). Per request it wrote the headers and the body in
two socket writes (on loopback each write also runs the receiver's side of TCP), parsed the answer in pure Python
and entered several anyio cancel scopes. This transport writes each request in one call, parses the answer with
httptools (llhttp, in C) and keeps idle connections per origin. The httpx.AsyncClient in front is unchanged, so
are the clients' error handling and the tests' MockTransport; FLYWHEEL_TRANSFORMER_LEAN_HTTP=false puts httpx's
own transport back.

Errors are httpx's, so a caller catching httpx.TimeoutException or httpx.TransportError sees no difference:
ConnectTimeout/ConnectError, WriteTimeout/WriteError, ReadTimeout/ReadError, RemoteProtocolError, PoolTimeout.
The read timeout bounds the whole answer, not each read. Like httpcore, an idle connection the server has closed
is noticed before reuse (its end of stream was seen) and dropped; a close that races a request fails it.

A body may have a length, come in chunks, or run to the end of the connection (HTTP/1.0 servers, Python's
http.server: a sink a user points the inference log at may be one). Not supported, none of it used here: HTTP/2,
proxies, `Expect: 100-continue`, streamed request bodies (every body is one JSON document), informational (1xx)
answers.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import defaultdict
from dataclasses import dataclass, field

import httptools
import httpx

READ_SIZE = 65536


class _Answer:
    """httptools' callbacks: the parts of one response as they are parsed."""

    __slots__ = ("body", "done", "headers", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = False
        self.headers_done = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp knows it here, not once the message is over

    def ends_with_connection(self) -> bool:
        """Whether the body runs to the end of the connection (neither a length nor chunks: HTTP/1.0 servers,
        Python's http.server), so the server closing is the answer's end, not a failure."""
        names = {name.lower() for name, _ in self.headers}
        return self.headers_done and b"content-length" not in names and b"transfer-encoding" not in names

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def reusable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio streams; at most `max_connections` requests in flight at once."""

    verify: ssl.SSLContext | bool = True
    max_connections: int = 100
    _idle: dict[tuple[bytes, bytes, int], list[_Connection]] = field(default_factory=lambda: defaultdict(list))
    _slots: asyncio.Semaphore | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        if self._slots is None:  # made in the running loop
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as e:
            raise httpx.PoolTimeout("no connection slot free in time", request=request) from e
        try:
            return await self._exchange(request, timeouts)
        finally:
            self._slots.release()

    async def _exchange(self, request: httpx.Request, timeouts: dict[str, float | None]) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        body = await request.aread()
        head = b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)
        head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
        connection = self._reuse(origin) or await self._connect(origin, timeouts.get("connect"), request)
        keep = False
        try:
            try:
                connection.writer.write(head + b"\r\n" + body)
                if connection.writer.transport.get_write_buffer_size() > READ_SIZE:
                    async with asyncio.timeout(timeouts.get("write")):
                        await connection.writer.drain()
            except TimeoutError as e:
                raise httpx.WriteTimeout("the request was not sent in time", request=request) from e
            except OSError as e:
                raise httpx.WriteError(str(e) or type(e).__name__, request=request) from e
            answer = _Answer()
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    while not answer.done:
                        data = await connection.reader.read(READ_SIZE)
                        if not data and answer.ends_with_connection():
                            break
                        if not data:
                            raise httpx.RemoteProtocolError(
                                "the server closed the connection without a complete answer", request=request)
                        answer.parser.feed_data(data)
            except TimeoutError as e:
                raise httpx.ReadTimeout("no complete answer in time", request=request) from e
            except httptools.HttpParserError as e:
                raise httpx.RemoteProtocolError(f"malformed answer: {e}", request=request) from e
            except OSError as e:
                raise httpx.ReadError(str(e) or type(e).__name__, request=request) from e
            keep = answer.keep_alive
            return httpx.Response(
                answer.parser.get_status_code(), headers=answer.headers, content=b"".join(answer.body),
                extensions={"http_version": b"HTTP/1.1"})
        finally:
            if keep and connection.reusable():
                self._idle[origin].append(connection)
            else:  # failed, cancelled or not to be kept: its state is unknown
                connection.close()

    def _reuse(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: tuple[bytes, bytes, int], timeout: float | None,
                       request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == b"https":
            context = self.verify if isinstance(self.verify, ssl.SSLContext) else ssl.create_default_context()
            if self.verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        name = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    name, port, ssl=context, server_hostname=name if context else None, limit=READ_SIZE * 4)
        except TimeoutError as e:
            raise httpx.ConnectTimeout(f"no connection to {name}:{port} in time", request=request) from e
        except OSError as e:
            raise httpx.ConnectError(f"{name}:{port}: {e.strerror or e}", request=request) from e
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class DirectClient:
    """JSON POSTs to one peer straight through a transport, as httpx Requests and Responses.

    httpx.AsyncClient's per-request machinery (merging URLs, headers and cookies, the auth and redirect flows, event
    hooks; none of it used on these calls) cost about as much CPU as the lean transport itself: ~190 us of client CPU
    a call through the client, ~85 us straight to the transport, ~500 us with httpx's own transport (a loopback
    micro-benchmark). The feature lookup and the predictor call, two a transaction, go this way. The transport's
    exceptions are httpx's, so callers catch what they caught; tests hand in httpx.MockTransport as before."""

    def __init__(self, base_url: str, timeout_s: float, transport: httpx.AsyncBaseTransport) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s).as_dict()
        self._transport = transport
        self.is_closed = False

    async def post_json(self, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST `body` as JSON (as httpx encodes it: compact, NaN refused) and read the whole answer."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        request = httpx.Request("POST", self.base_url + path, content=content,
                                headers={"content-type": "application/json", **(headers or {})},
                                extensions={"timeout": self._timeout})
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        self.is_closed = True
        await self._transport.aclose()
