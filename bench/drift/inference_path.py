"""Latency the drift service adds to the inference path: the real stack (features, predictor, transformer
from scripts/localstack.py, the published model in model_repo) with the transformer's inference log going
to a real drift service, against the same stack with inference logging off.

    tests/.venv/bin/python bench/drift/inference_path.py [--rate 50] [--duration 10] [--rounds 2]

Open-loop load from bench/e2e (latency from the scheduled send time). Rounds alternate sink on / sink
off (the transformer is restarted with or without FLYWHEEL_TRANSFORMER_EVENT_SINK_URL), so drift in the
shared machine's load hits both alike. Also checks the drift service took every event the transformer
sent (the two services' CloudEvent contract, with real traffic). Merges its figures into
bench/results/drift.json under "inference_path".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench" / "e2e"))
from localstack import Ports, Service, Stack, default_services, drift_token_env, venv_python  # noqa: E402
from run import RAW_FIELDS, free_port, live_transactions, open_loop  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "drift.json"
SINK = "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL"


def metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.split()[-1])
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    ports = Ports(features=free_port(), predictor=free_port(), transformer=free_port())
    drift_port = free_port()
    drift_url = f"http://127.0.0.1:{drift_port}"
    n = int(args.rate * args.duration)
    transactions = live_transactions(n, args.data)
    bodies = [{"instances": [{k: t[k] for k in RAW_FIELDS}]} for t in transactions]
    url = f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict"
    rounds: dict[str, list[dict]] = {"sink_on": [], "sink_off": []}
    with tempfile.TemporaryDirectory() as scratch:
        drift = Service("drift", [venv_python("services/drift"), "-m", "flywheel_drift"],
                        {"FLYWHEEL_DRIFT_HTTP_HOST": "127.0.0.1", "FLYWHEEL_DRIFT_HTTP_PORT": str(drift_port),
                         "FLYWHEEL_DRIFT_MODEL_REPO": str(args.model_repo),
                         "FLYWHEEL_DRIFT_SPOOL_DIR": f"{scratch}/spool", "FLYWHEEL_DRIFT_MMD_ENABLED": "false",
                         **drift_token_env(args.data)},
                        f"{drift_url}/ready")
        services = [drift, *default_services(args.model_repo, args.data, ports, {SINK: f"{drift_url}/"})]
        started = time.monotonic()
        with Stack(services, Path(scratch)) as stack:
            print(f"stack ready in {time.monotonic() - started:.0f}s", flush=True)
            for r in range(args.rounds):
                for mode in ("sink_on", "sink_off"):
                    transformer = stack["transformer"]
                    if mode == "sink_on":
                        transformer.env[SINK] = f"{drift_url}/"
                    else:
                        transformer.env.pop(SINK, None)
                    stack.restart("transformer")
                    asyncio.run(open_loop(url, bodies[:50], 50))  # warm up
                    before = metric(drift_url, "flywheel_drift_events_total")
                    result = asyncio.run(open_loop(url, bodies, args.rate))
                    time.sleep(2)  # the transformer's sender tasks finish after the answers
                    result["drift_events_received"] = metric(drift_url, "flywheel_drift_events_total") - before
                    rounds[mode].append(result)
                    print(f"round {r} {mode}: p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms, "
                          f"{result['errors']} errors, drift got {result['drift_events_received']:.0f} events",
                          flush=True)
            report = httpx.get(f"{drift_url}/v1/report", timeout=30).json()
            rejected = metric(drift_url, "flywheel_drift_rejected_requests_total")

    def med(mode: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds[mode]), 2)

    summary = {
        "rate_rps": args.rate, "duration_s": args.duration, "rounds": args.rounds,
        "p50_ms": {m: med(m, "p50_ms") for m in rounds}, "p99_ms": {m: med(m, "p99_ms") for m in rounds},
        "added_p50_ms": round(med("sink_on", "p50_ms") - med("sink_off", "p50_ms"), 2),
        "added_p99_ms": round(med("sink_on", "p99_ms") - med("sink_off", "p99_ms"), 2),
        "drift_events_expected_per_on_round": 2 * n,
        "drift_events_received": [r["drift_events_received"] for r in rounds["sink_on"]],
        "drift_rejected": rejected,
        "drift_rows_analysed": sum(v["rows"] for v in report["versions"]),
        "drift_versions": [f"{v['model']}/{v['version']}" for v in report["versions"]],
        "rounds_detail": rounds,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds_detail"}, indent=1))
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out["inference_path"] = summary
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
