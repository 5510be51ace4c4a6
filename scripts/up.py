"""`make up`: start the local loop, send a burst of simulated traffic, summarise, stay up until Ctrl-C.

The Makefile has already installed every project, generated data, applied and materialised features and
trained v1 if the model repo was empty; this script starts the services and shows the loop working.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localstack import ROOT, Ports, Stack, StackError, default_services, post_json, router_token, venv_python  # noqa: E402

# The stdlib twin of flywheel_core.schema.RAW_TRANSACTION_FIELDS: this script runs on the bare interpreter.
RAW_FIELDS = (
    "transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category", "channel",
    "event_timestamp",
)


def live_transactions(n: int, scenario: str, data_dir: Path, out: Path) -> list[dict]:
    """Simulated live traffic from the same cards and merchants as the history."""
    subprocess.run(
        [venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", scenario, "--n", str(n),
         "--data", str(data_dir), "--out", str(out)],
        check=True, cwd=ROOT,
    )
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def burst(url: str, transactions: list[dict], concurrency: int) -> dict:
    """Send each transaction as one request; return the figures for the summary.

    The simulator's ground truth (`is_fraud`) is never sent; it only says how many frauds were caught.
    """

    def one(transaction: dict) -> tuple[float, int, dict]:
        started = time.perf_counter()
        status, body = post_json(url, {"instances": [{key: transaction[key] for key in RAW_FIELDS}]})
        return time.perf_counter() - started, status, body

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, transactions))
    elapsed = time.perf_counter() - started
    latencies = sorted(seconds for seconds, _, _ in results)
    ok = [body["predictions"][0] for _, status, body in results if status == 200]
    fraud_ids = {t["transaction_id"] for t in transactions if t.get("is_fraud")}
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "rps": len(results) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "decline_rate": sum(p["decision"] == "decline" for p in ok) / max(1, len(ok)),
        "model_versions": sorted({p["model_version"] for p in ok}),
        "frauds": len(fraud_ids),
        "frauds_declined": sum(p["decision"] == "decline" and p["id"] in fraud_ids for p in ok),
    }


def ensure_route(ports: Ports, token: Path, model_repo: Path) -> dict:
    """The model's route; on a first run, one sending everything to the newest published version (stable).

    Later runs keep the stored route, so a version published since does not take traffic by itself.
    """
    admin = f"http://127.0.0.1:{ports.router_admin}/v1/routes/fraud"
    headers = {"authorization": f"Bearer {token.read_text().strip()}", "content-type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(admin, headers=headers), timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    versions = sorted((p.name for p in (model_repo / "fraud").glob("v*") if (p / "metadata.json").is_file()),
                      key=lambda v: int(v[1:]))
    body = json.dumps({"stable": {"version": versions[-1]}, "generation": 0}).encode()
    request = urllib.request.Request(admin, data=body, headers=headers, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def curl_examples(ports: Ports, transaction: dict, token: Path, route: dict) -> str:
    body = json.dumps({"instances": [transaction]})
    row = json.dumps({"inputs": [{"name": "input", "shape": [1, 19], "datatype": "FP32", "data": [0.0] * 19}]})
    stable = route["stable"]["version"]
    candidate = f"v{int(stable[1:]) + 1}"
    canary = json.dumps({"stable": {"version": stable}, "candidate": {"version": candidate}, "candidateWeight": 10,
                         "generation": route["generation"]})
    auth = f"-H \"authorization: Bearer $(cat {token})\""
    return "\n".join([
        "Try it (the router on :%d is the entry point; -i shows x-flywheel-model-version):" % ports.router,
        f"  curl -si localhost:{ports.router}/v1/models/fraud:predict -H 'content-type: application/json' -d '{body}'",
        f"  curl -s localhost:{ports.router_admin}/v1/routes {auth}      # routes (admin port, bearer token)",
        f"  curl -s -X PUT localhost:{ports.router_admin}/v1/routes/fraud {auth} -H 'content-type: application/json' "
        f"-d '{canary}'   # canary, once {candidate} is published (make retrain)",
        f"  curl -s localhost:{ports.router_admin}/v1/stats/fraud {auth}",
        f"  curl -s localhost:{ports.predictor}/v2/models/fraud",
        f"  curl -s localhost:{ports.predictor}/v2/models/fraud/infer -H 'content-type: application/json' -d '{row}'",
        f"  curl -s localhost:{ports.features}/get-online-features -H 'content-type: application/json' "
        f"-d '{{\"features\": [\"card_activity:txn_count_24h\"], \"entities\": {{\"card_id\": [\"{transaction['card_id']}\"]}}}}'",
        f"  curl -s localhost:{ports.predictor}/metrics | grep flywheel_",
        f"  curl -s localhost:{ports.drift}/v1/report      # drift per feature (HTML: http://localhost:{ports.drift}/report)",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--requests", type=int, default=500, help="size of the traffic burst")
    parser.add_argument("--scenario", default="none", help="simulator scenario of the burst")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--exit", action="store_true", help="stop after the summary instead of waiting for Ctrl-C")
    args = parser.parse_args()

    ports = Ports()
    run_dir = ROOT / ".run"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Stack(default_services(args.model_repo, args.data, ports), log_dir=run_dir) as stack:
            print("All services ready: " + ", ".join(f"{s.name} ({s.ready_url})" for s in stack.services))
            route = ensure_route(ports, router_token(args.data), args.model_repo)
            transactions = live_transactions(args.requests, args.scenario, args.data, run_dir / "live.jsonl")
            summary = burst(f"http://127.0.0.1:{ports.router}/v1/models/fraud:predict", transactions, args.concurrency)
            print(
                f"Sent {summary['requests']} requests ({summary['errors']} errors) at {summary['rps']:.0f} req/s: "
                f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms; decline rate "
                f"{summary['decline_rate']:.1%} ({summary['frauds_declined']} of {summary['frauds']} simulated frauds "
                f"declined); model version {', '.join(summary['model_versions']) or '-'}"
            )
            print(curl_examples(ports, {key: transactions[0][key] for key in RAW_FIELDS}, router_token(args.data), route))
            print(f"Logs in {run_dir}/. ", end="")
            if args.exit:
                return 0 if summary["errors"] == 0 else 1
            print("Press Ctrl-C to stop.", flush=True)
            while not stop.wait(1.0):
                pass
    except KeyboardInterrupt:
        pass
    except StackError as e:
        print(f"make up failed: {e}", file=sys.stderr)
        return 1
    finally:
        print("\nStopped every service this run started.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
