"""One kept httpx client per adapter, made on first use (inside the event loop) and closed by its owner.

Building an httpx client loads the CA bundle: ~0.1 s of CPU on the event loop. Made per call, that starved
every other reconcile at a hundred rollouts (bench/controller/control_plane.py found it); kept, it costs once.
`verify` is the SSL context made once at start-up from FLYWHEEL_TLS_* (`_main`): https peers are checked with
the Flywheel CA when it is set, else with the system's trust store (True).
"""

from __future__ import annotations

import ssl

import httpx


class KeptClient:
    def __init__(
        self, transport: httpx.AsyncBaseTransport | None, timeout: float, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.verify = verify
        self._http: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self.transport, timeout=self.timeout, verify=self.verify)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
