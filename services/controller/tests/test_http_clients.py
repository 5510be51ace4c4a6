"""The HTTP clients' hidden per-request cost: httpcore's event-loop check must be a module lookup, not an import.

httpcore asks `sniffio` which async library runs on every connection-pool lock, event and cancel shield, inside a
`try: import sniffio`. anyio 4 no longer depends on sniffio, so without it in this service's dependencies every
one of those checks was a failed import that scanned sys.path: a fifth of the transformer's CPU under load
(issue 12's profile), and this service calls out with httpx's async client too. sniffio is a direct dependency
for that reason.
"""

from __future__ import annotations

import asyncio
import sys

from httpcore._synchronization import current_async_library


def test_httpcore_finds_sniffio_so_its_per_request_loop_check_imports_nothing():
    async def check() -> str:
        return current_async_library()

    assert asyncio.run(check()) == "asyncio"
    assert "sniffio" in sys.modules  # a failed import leaves nothing there, and is retried on every call
