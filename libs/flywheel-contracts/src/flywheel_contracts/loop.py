"""Run a service's main coroutine on uvloop when it is installed, else on asyncio's own loop.

KServe's ModelServer (0.21) starts a single-process server with plain `asyncio.run`, which is asyncio's selector
loop whatever uvicorn's `loop` setting says; the predictor and the transformer start theirs through this instead.
On the transformer's hot path asyncio's loop spent about a third of the process's CPU in its own socket writes
and polling (py-spy, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional: installed where a service uses it
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
