"""The router under cProfile (CPU-time clock) between two signals, with its time grouped by layer.

`python -m flywheel_router` as usual (same FLYWHEEL_ROUTER_* settings), plus: SIGUSR1 starts profiling,
SIGUSR2 stops it and writes a JSON summary to --out: CPU seconds by layer (uvicorn, the upstream client,
the router's own code, metrics, the rest) and the top functions. Builtins (C functions such as a parser's
feed_data or orjson.loads) count towards the layer of the Python function that called them. Time in
uvloop's C event loop between callbacks (socket reads and writes, scheduling) is not seen by cProfile;
run.py reports it as the rest of the process's CPU time over the same window.

    services/router/.venv/bin/python bench/router/profiled_router.py --out profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import signal
import sys
import time

LAYERS = (
    ("flywheel_router/_h1.py", "upstream client (flywheel h1)"),
    ("flywheel_router/_upstream.py", "upstream client (httpx)"),
    ("/httpx/", "upstream client (httpx)"),
    ("/httpcore/", "upstream client (httpx)"),
    ("/anyio/", "upstream client (httpx)"),
    ("/h11/", "upstream client (httpx)"),
    ("/sniffio/", "upstream client (httpx)"),
    ("/uvicorn/", "ASGI server (uvicorn + httptools)"),
    ("/httptools/", "ASGI server (uvicorn + httptools)"),
    ("flywheel_router/", "router code (routing, headers, stats, shadow)"),
    ("flywheel_contracts/", "router code (routing, headers, stats, shadow)"),
    ("/prometheus_client/", "metrics (prometheus_client)"),
    ("/asyncio/", "asyncio (stdlib Python parts)"),
)


def layer(filename: str) -> str:
    for marker, name in LAYERS:
        if marker in filename:
            return name
    return "other"


def summarize(profile: cProfile.Profile) -> dict:
    stats = pstats.Stats(profile).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    layers: dict[str, float] = {}
    functions = []
    for (filename, line, func), (_, calls, tottime, _, callers) in stats.items():
        if filename == "~":  # a builtin: charge each caller's layer with what it spent here
            for (caller_file, _, _), caller_times in callers.items():
                name = layer(caller_file)
                layers[name] = layers.get(name, 0.0) + caller_times[2]
            label = func
        else:
            layers[layer(filename)] = layers.get(layer(filename), 0.0) + tottime
            label = f"{filename.split('site-packages/')[-1].split('/src/')[-1]}:{line}({func})"
        functions.append((tottime, calls, label))
    functions.sort(reverse=True)
    return {
        "profiled_cpu_s": round(sum(layers.values()), 4),
        "layers_cpu_s": {k: round(v, 4) for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
        "top_functions": [{"tottime_s": round(t, 4), "calls": n, "function": f} for t, n, f in functions[:25]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import uvloop

    from flywheel_router import load_settings
    from flywheel_router._main import serve

    profile = cProfile.Profile(time.process_time)

    def start() -> None:
        profile.enable()

    def stop() -> None:
        profile.disable()
        with open(args.out, "w") as f:
            json.dump(summarize(profile), f, indent=1)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, start)
        loop.add_signal_handler(signal.SIGUSR2, stop)
        await serve(load_settings())

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
