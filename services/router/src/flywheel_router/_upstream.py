"""Adapter to the upstreams (transformer pools, per-version endpoints) on httpx, and the answer types.

The router's default client is `_h1.H1Upstreams` (same contract, a fraction of the cost); this one is
selectable with FLYWHEEL_ROUTER_UPSTREAM_CLIENT=httpx and lets tests inject an httpx mock transport.

The body goes through as bytes, never re-encoded. Failures the router acts on are typed: `connect`
(refused, reset, closed mid-answer) and `timeout` (connect or whole answer slower than configured), so a
failed candidate can be retried on the stable and counted. HTTP error answers are answers, not failures.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import httpx

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream's answer; header names are lower-case (both clients guarantee it)."""

    status: int
    headers: Headers
    body: bytes
    seconds: float


class UpstreamFailure(Exception):
    """No answer: `kind` is "connect" or "timeout". The message names the upstream URL: for logs only;
    `public` is what a caller may read (no internal addresses)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def public(self) -> str:
        return "it did not answer in time" if self.kind == "timeout" else "it cannot be reached"


class UpstreamClient(Protocol):
    """What the proxy and the shadow need of an HTTP client: `Upstreams` (httpx) or `_h1.H1Upstreams`."""

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout_s: float | None = None
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class Upstreams:
    """Shared client to every upstream base URL (httpx pools connections per origin)."""

    def __init__(
        self,
        connect_timeout_s: float,
        timeout_s: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            follow_redirects=False,
        )

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout_s: float | None = None
    ) -> Answer:
        started = perf_counter()
        extensions = None if timeout_s is None else {"timeout": httpx.Timeout(timeout_s).as_dict()}
        try:
            request = self._client.build_request(method, url, headers=headers, content=body, extensions=extensions)
            response = await self._client.send(request, stream=True)
            try:
                # Raw bytes: a compressed answer stays compressed, as its content-encoding header says.
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.TimeoutException as e:
            raise UpstreamFailure("timeout", f"{url} did not answer within {timeout_s or self.timeout_s:g} s") from e
        except httpx.TransportError as e:
            raise UpstreamFailure("connect", f"cannot reach {url} ({type(e).__name__})") from e
        headers = [(name.lower(), value) for name, value in response.headers.raw]
        return Answer(response.status_code, headers, body, perf_counter() - started)

    async def aclose(self) -> None:
        await self._client.aclose()
