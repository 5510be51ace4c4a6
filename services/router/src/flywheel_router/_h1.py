"""A lean HTTP/1.1 client for the hot path: asyncio protocols, httptools' C parser, keep-alive pools.

Why not httpx here: per forwarded request httpx builds Request/Response objects, header multidicts, URL
objects, stream wrappers and timeout contexts, several hundred microseconds of Python on a path where the
upstream itself answers in about two hundred. This client keeps what a reverse proxy needs and nothing
else: one pool of idle keep-alive connections per upstream (LIFO, bounded), the request written in one
`transport.write`, the response parsed by httptools (the parser uvicorn uses) straight into bytes.

Guarantees kept (the same as the httpx client, which tests can still inject): connect and whole-answer
timeouts; typed failures ("connect" for refused/reset/closed, "timeout"); a connection that died while
idle in the pool is retried once on a fresh one before counting as a failure (the request never reached
the server); chunked and content-length bodies; a response the server marks `Connection: close`, or one
that timed out, never returns to the pool; https upstreams verified with the context `_main.build` makes once
from FLYWHEEL_TLS_* (the CA file when set, else the system's trust store); a failed handshake is a `connect`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from time import perf_counter
from urllib.parse import urlsplit

import httptools

from ._upstream import Answer, Headers, UpstreamFailure


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: safe to send again on a new one."""


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "status", "headers", "body", "received", "closed", "keep_alive")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.received = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"malformed HTTP answer: {e}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self._fail(_Stale() if not self.received else ConnectionError("connection closed mid-answer"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, self.headers, b"".join(self.body)))

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    # use
    def send(self, data: bytes) -> asyncio.Future:
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Idle keep-alive connections to one upstream origin, at most `limit` open at once."""

    def __init__(self, scheme: str, host: str, port: int, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host, self.port = host, port
        self.ssl = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self.host_header = f"{host}:{port}".encode()
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)

    async def connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                ),
                timeout_s,
            )
        except TimeoutError as e:
            raise UpstreamFailure("timeout", f"connecting to {self.host}:{self.port} took over {timeout_s:g} s") from e
        except OSError as e:
            raise UpstreamFailure("connect", f"cannot connect to {self.host}:{self.port} ({e.strerror or e})") from e
        return connection

    def take_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class H1Upstreams:
    """`Upstreams` on the lean client: same `send` contract, a fraction of the cost per request."""

    def __init__(
        self,
        connect_timeout_s: float,
        timeout_s: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.ssl_context = ssl_context  # https upstreams: built once (the CA bundle), shared by every pool
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pools: dict[str, _Pool] = {}
        self._targets: dict[str, tuple[_Pool, bytes]] = {}

    def _target(self, url: str) -> tuple[_Pool, bytes]:
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            pool = self._pools[origin] = _Pool(
                parts.scheme, parts.hostname or "", port, self.max_connections, self.ssl_context
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = (pool, target.encode("latin-1"))
        if len(self._targets) < 4096:  # paths are few (a handful per model); never grow without bound
            self._targets[url] = found
        return found

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout_s: float | None = None
    ) -> Answer:
        started = perf_counter()
        pool, target = self._target(url)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        head = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", pool.host_header, b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            head += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        head.append(b"\r\n")
        data = b"".join(head) + body
        async with pool.slots:
            connection = pool.take_idle()
            for attempt in (0, 1):
                if connection is None:
                    connection = await pool.connect(min(self.connect_timeout_s, timeout))
                waiter = connection.send(data)
                # A timer on the loop, cheaper than asyncio.wait_for's extra future and task per request.
                timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
                try:
                    status, answer_headers, answer_body = await waiter
                except _Stale:
                    connection = None  # the server closed it while idle: once more on a new connection
                    if attempt:
                        raise UpstreamFailure("connect", f"{url} closed the connection without answering") from None
                    continue
                except TimeoutError:
                    connection.abort()
                    raise UpstreamFailure("timeout", f"{url} did not answer within {timeout:g} s") from None
                except ConnectionError as e:
                    connection.abort()
                    raise UpstreamFailure("connect", f"{url}: {e}") from e
                except BaseException:  # cancelled (the caller went away): the answer may still come; drop it
                    connection.abort()
                    raise
                finally:
                    timer.cancel()
                break
            assert connection is not None  # the loop ends on an answer (break) or raises
            if connection.keep_alive and not connection.closed:
                pool.idle.append(connection)
            else:
                connection.abort()
        return Answer(status, answer_headers, answer_body, perf_counter() - started)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().abort()
