"""End-to-end latency through the transformer (features + on-demand + predictor), at fixed request rates.

Open-loop load: request i is due at start + i/rate and its latency is measured from when it was due, so a
slow server cannot hide its queueing by slowing the load down (no coordinated omission). Side by side in
the same run, the same rates go straight to the predictor (one V2 row) as the baseline: the difference is
what the transformer and the feature service add.

Run with the integration-test environment, which has httpx:
    tests/.venv/bin/python bench/e2e/run.py [--rates 25,50,100] [--duration 10]
It needs `make train` (data, features, a model) to have run; it starts its own stack on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from flywheel_core import schema  # noqa: E402

from localstack import Ports, Stack, default_services, free_port, venv_python  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def open_loop(url: str, bodies: list[dict], rate: float) -> dict:
    """Send bodies at `rate` per second regardless of how fast answers come back."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        start = time.perf_counter() + 0.1
        latencies: list[float] = []
        errors = 0

        async def one(i: int, body: dict) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - due)
            else:
                errors += 1

        await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "target_rps": rate,
        "achieved_rps": round(len(bodies) / elapsed, 1),
        "requests": len(bodies),
        "errors": errors,
        "p50_ms": round(1000 * percentile(latencies, 0.50), 2),
        "p90_ms": round(1000 * percentile(latencies, 0.90), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
    }


def live_transactions(n: int, data_dir: Path) -> list[dict]:
    # From the history's recorded end, not the one today's preset implies (see cost.py's live_transactions).
    end = json.loads((data_dir / "simulation.json").read_text())["end"]
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        subprocess.run([venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--n", str(n),
                        "--data", str(data_dir), "--start", end, "--out", out.name], check=True, cwd=ROOT)
        return [json.loads(line) for line in Path(out.name).read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--rates", default="25,50,100", help="comma-separated request rates (req/s)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate and target")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    args = parser.parse_args()

    rates = [float(r) for r in args.rates.split(",")]
    ports = Ports(*(free_port() for _ in range(6)))  # drift and the router too: never a default port
    transactions = live_transactions(int(max(rates) * args.duration), args.data)
    transformer_bodies = [{"instances": [{k: t[k] for k in schema.RAW_TRANSACTION_FIELDS}]} for t in transactions]
    vector = schema.vectorize([{}])[0]
    predictor_body = {
        "inputs": [{"name": schema.INPUT_NAME, "shape": [1, schema.INPUT_DIM], "datatype": "FP32", "data": vector}]
    }

    results = []
    with tempfile.TemporaryDirectory() as logs, Stack(default_services(args.model_repo, args.data, ports), Path(logs)):
        for rate in rates:
            n = int(rate * args.duration)
            # Warm both paths (connections, first-call allocations) before measuring.
            asyncio.run(
                open_loop(f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", transformer_bodies[:50], 50)
            )
            asyncio.run(
                open_loop(f"http://127.0.0.1:{ports.predictor}/v2/models/fraud/infer", [predictor_body] * 50, 50)
            )
            end_to_end = asyncio.run(open_loop(
                f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict", transformer_bodies[:n], rate))
            predictor = asyncio.run(open_loop(
                f"http://127.0.0.1:{ports.predictor}/v2/models/fraud/infer", [predictor_body] * n, rate))
            added = round(end_to_end["p50_ms"] - predictor["p50_ms"], 2)
            results.append({"rate_rps": rate, "end_to_end": end_to_end, "predictor_only": predictor,
                            "p50_added_by_transformer_and_features_ms": added})
            print(f"{rate:>6.0f} req/s  end-to-end p50 {end_to_end['p50_ms']:.2f} ms p99 {end_to_end['p99_ms']:.2f} ms "
                  f"({end_to_end['errors']} errors) | predictor only p50 {predictor['p50_ms']:.2f} ms "
                  f"p99 {predictor['p99_ms']:.2f} ms | added p50 {added:.2f} ms", flush=True)

    report = {
        "benchmark": "e2e",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "setup": {"load": "open loop, latency from the scheduled send time", "duration_s": args.duration,
                  "client": "httpx.AsyncClient on the same machine", "services": "one process each, loopback"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
