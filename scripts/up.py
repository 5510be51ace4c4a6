"""`make up`: start the local loop, send a burst of simulated traffic, summarise, stay up until Ctrl-C.

The Makefile has already installed every project, generated data, applied and materialised features and
trained v1 if the model repo was empty; this script starts the services and shows the loop working. The
services start at once (none needs another to start) while the live traffic is simulated, so the first
request is answered in about the start-up time of the slowest service.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localstack import (  # noqa: E402
    LOOPBACK,
    ROOT,
    Ports,
    Service,
    Stack,
    StackError,
    default_services,
    free_port,
    post_json,
    router_token,
    venv_python,
)

# The stdlib twin of flywheel_core.schema.RAW_TRANSACTION_FIELDS: this script runs on the bare interpreter.
RAW_FIELDS = (
    "transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category", "channel",
    "event_timestamp",
)
FIRST_REQUEST = "First request answered"  # the line tests/integration/test_make_up.py times


def live_transactions(n: int, scenario: str, data_dir: Path, out: Path) -> list[dict]:
    """Simulated live traffic from the same cards and merchants as the history.

    In its own session, so a Ctrl-C meant for `make up` does not print the simulator's traceback.
    """
    result = subprocess.run(
        [venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", scenario, "--n", str(n),
         "--data", str(data_dir), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, start_new_session=True,
    )
    if result.returncode != 0:
        raise StackError(f"simulating live traffic failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def send(url: str, transaction: dict) -> tuple[float, int, dict]:
    """One transaction as one request (never its ground truth): (seconds, status, body)."""
    started = time.perf_counter()
    status, body = post_json(url, {"instances": [{key: transaction[key] for key in RAW_FIELDS}]})
    return time.perf_counter() - started, status, body


def burst(url: str, transactions: list[dict], concurrency: int, first: tuple[float, int, dict]) -> dict:
    """Send the rest of the transactions (`first` answered the first one); return the figures for the summary.

    The simulator's ground truth (`is_fraud`) is never sent; it only says how many frauds were caught.
    """
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [first, *pool.map(lambda t: send(url, t), transactions[1:])]
    elapsed = time.perf_counter() - started
    latencies = sorted(seconds for seconds, _, _ in results)
    ok = [body["predictions"][0] for _, status, body in results if status == 200]
    fraud_ids = {t["transaction_id"] for t in transactions if t.get("is_fraud")}
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "error_statuses": Counter(status for _, status, _ in results if status != 200),
        "seconds": elapsed,
        "rps": (len(results) - 1) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "declines": sum(p["decision"] == "decline" for p in ok),
        "answers_by_version": Counter(p["model_version"] for p in ok),
        "frauds": len(fraud_ids),
        "frauds_declined": sum(p["decision"] == "decline" and p["id"] in fraud_ids for p in ok),
    }


def get_text(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as response:
        return response.read().decode()


def ensure_route(ports: Ports, token: Path, model_repo: Path) -> dict:
    """The model's route; on a first run, one sending everything to the newest published version (stable).

    Later runs keep the stored route, so a version published since does not take traffic by itself.
    """
    admin = f"http://{LOOPBACK}:{ports.router_admin}/v1/routes/fraud"
    headers = {"authorization": f"Bearer {token.read_text().strip()}", "content-type": "application/json"}
    try:
        return json.loads(get_text(admin, headers))
    except urllib.error.HTTPError as e:
        e.close()
        if e.code != 404:
            raise
    versions = sorted((p.name for p in (model_repo / "fraud").glob("v*") if (p / "metadata.json").is_file()),
                      key=lambda v: int(v[1:]))
    if not versions:
        raise StackError(f"no published version of model fraud in {model_repo}: run `make train`")
    body = json.dumps({"stable": {"version": versions[-1]}, "generation": 0}).encode()
    request = urllib.request.Request(admin, data=body, headers=headers, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def served_variants(ports: Ports) -> dict[str, str]:
    """Version -> "variant on provider", from the predictor's `flywheel_predictor_model_info` series."""
    variants = {}
    try:
        text = get_text(f"http://{LOOPBACK}:{ports.predictor}/metrics")
    except (urllib.error.URLError, OSError):
        return variants
    for line in text.splitlines():
        if line.startswith("flywheel_predictor_model_info{") and not line.rstrip().endswith(" 0.0"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            labels = {key: value.strip('"') for key, value in labels.items()}
            variants[labels.get("version", "?")] = f"{labels.get('variant', '?')} on {labels.get('provider', '?')}"
    return variants


def drift_status(ports: Ports, answered: int, wait_s: float = 3.0) -> str:
    """One line per monitored version from the drift service's JSON report.

    The transformer posts its inference events in the background: wait a little for them to arrive.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            report = json.loads(get_text(f"http://{LOOPBACK}:{ports.drift}/v1/report"))
        except (urllib.error.URLError, OSError, ValueError) as e:
            return f"no report ({e})"
        versions = report.get("versions", [])
        if sum(v.get("rows", 0) for v in versions) >= answered or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    window_rows = report.get("settings", {}).get("window_rows", "?")
    if not versions:
        return "no predictions logged yet"
    lines = []
    for v in versions:
        name = f"{v['model']} {v['version']}"
        waiting = v.get("open_window_rows", 0)
        if v.get("windows", 0) == 0:
            verdict = f"no verdict yet: {waiting} of the {window_rows} rows of the first window"
        else:
            tested = f"{v['windows']} window{'s' if v['windows'] != 1 else ''} tested"
            state = "DRIFT" if v.get("drift") else "no drift"
            verdict = f"{state} ({tested}; {waiting} of {window_rows} rows in the next)"
        alerts = len(v.get("alerts", []))
        lines.append(f"{name}: {verdict}" + (f", {alerts} alert{'s' if alerts != 1 else ''}" if alerts else ""))
    return "\n               ".join(lines)


def describe_route(route: dict) -> str:
    stable = route.get("stable", {}).get("version", "?")
    text = f"stable {stable}"
    if route.get("candidate"):
        text += f", candidate {route['candidate']['version']} at {route.get('candidateWeight', 0):g}%"
    return text + f" (generation {route.get('generation', '?')})"


def summary_text(summary: dict, ports: Ports, route: dict, token: Path, run_dir: Path) -> str:
    variants = served_variants(ports)
    answered = ", ".join(
        f"{version} ({variants.get(version, 'variant unknown')}): {count}"
        for version, count in sorted(summary["answers_by_version"].items())
    )
    errors = f"{summary['errors']} errors"
    if summary["error_statuses"]:
        errors += " (" + ", ".join(f"{n} x HTTP {s}" for s, n in sorted(summary["error_statuses"].items())) + ")"
    declines, ok = summary["declines"], max(1, summary["ok"])
    base = f"http://{LOOPBACK}"
    return "\n".join([
        f"Result: {summary['requests']} requests through the router in {summary['seconds']:.1f} s "
        f"({summary['rps']:.0f} req/s)",
        f"  answers      {summary['ok']} ok, {errors}; latency p50 {summary['p50_ms']:.1f} ms, "
        f"p99 {summary['p99_ms']:.1f} ms",
        f"  decisions    {declines} declined ({declines / ok:.1%}), {summary['ok'] - declines} approved; "
        f"{summary['frauds_declined']} of {summary['frauds']} simulated frauds caught",
        f"  model        fraud, answers by version: {answered or '-'}",
        f"  route        {describe_route(route)}",
        f"  drift        {drift_status(ports, summary['ok'])}",
        "Look next:",
        f"  drift report {base}:{ports.drift}/report  (JSON: {base}:{ports.drift}/v1/report)",
        f"  metrics      {base}:{ports.router}/metrics (router), {base}:{ports.transformer}/metrics (transformer), "
        f"{base}:{ports.predictor}/metrics (predictor), {base}:{ports.drift}/metrics (drift)",
        f"  logs         {run_dir}/<service>.log (the previous run's: {run_dir}/previous/)",
        f"  admin token  {token} (bearer token of the router's admin API on :{ports.router_admin})",
        f"  credentials  {token.parent.parent / 'tokens'}/ (features-read, features-write, drift-ingest, "
        "drift-labels, transformer-debug: see docs/security.md)",
    ])


def curl_examples(ports: Ports, transaction: dict, token: Path, route: dict) -> str:
    body = json.dumps({"instances": [transaction]})
    row = json.dumps({"inputs": [{"name": "input", "shape": [1, 19], "datatype": "FP32", "data": [0.0] * 19}]})
    stable = route["stable"]["version"]
    candidate = f"v{int(stable[1:]) + 1}"
    canary = json.dumps({"stable": {"version": stable}, "candidate": {"version": candidate}, "candidateWeight": 10,
                         "generation": route["generation"]})
    auth = f"-H \"authorization: Bearer $(cat {token})\""
    host = LOOPBACK
    return "\n".join(
        [
            "Try it (the router on :%d is the entry point; -i shows x-flywheel-model-version):" % ports.router,
            f"  curl -si {host}:{ports.router}/v1/models/fraud:predict -H 'content-type: application/json' -d '{body}'",
            f"  curl -s {host}:{ports.router_admin}/v1/routes {auth}      # routes (admin port, bearer token)",
            f"  curl -s -X PUT {host}:{ports.router_admin}/v1/routes/fraud {auth} -H 'content-type: application/json' "
            f"-d '{canary}'   # canary, once {candidate} is published (make retrain)",
            f"  curl -s {host}:{ports.router_admin}/v1/stats/fraud {auth}",
            f"  curl -s {host}:{ports.predictor}/v2/models/fraud",
            f"  curl -s {host}:{ports.predictor}/v2/models/fraud/infer -H 'content-type: application/json' -d '{row}'",
            f"  curl -s {host}:{ports.transformer}/v1/models/fraud:predict -H 'x-flywheel-debug-features: 1' "
            f'-H "authorization: Bearer $(cat {token.parent.parent / "tokens" / "transformer-debug"})" '
            f"-H 'content-type: application/json' -d '{body}'   # the exact model input (debug token)",
            f"  curl -s {host}:{ports.features}/get-online-features "
            f'-H "authorization: Bearer $(cat {token.parent.parent / "tokens" / "features-read"})" '
            "-H 'content-type: application/json' "
            f'-d \'{{"features": ["card_activity:txn_count_24h"], '
            f'"entities": {{"card_id": ["{transaction["card_id"]}"]}}}}\'',
            f"  curl -s {host}:{ports.predictor}/metrics | grep flywheel_",
        ]
    )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the stack the way Ctrl-C does


def main() -> int:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="logs and scratch files (default .run/)")
    parser.add_argument("--requests", type=int, default=500, help="size of the traffic burst")
    parser.add_argument("--scenario", default="none", help="simulator scenario of the burst")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--free-ports", action="store_true",
                        help="listen on free loopback ports instead of the usual ones (a second stack, tests)")
    parser.add_argument("--exit", action="store_true", help="stop after the summary instead of waiting for Ctrl-C")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    # Ctrl-C and SIGTERM both stop the stack, even where SIGINT came in ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)

    def since_start() -> str:
        return f"{time.monotonic() - started:.1f} s"

    ports = Ports(*(free_port() for _ in range(6))) if args.free_ports else Ports()
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    token = router_token(args.data)
    services = default_services(args.model_repo, args.data, ports)
    width = max(len(s.name) for s in services)

    def on_ready(service: Service) -> None:
        print(f"  {service.name:<{width}} ready in {service.ready_after_s:4.1f} s  {service.ready_url}")

    print(f"Starting {', '.join(s.name for s in services)} on {LOOPBACK} (logs in {run_dir}/) and simulating "
          f"{args.requests} live transactions ...")
    simulator = ThreadPoolExecutor(1, thread_name_prefix="simulate")
    try:
        live = simulator.submit(live_transactions, args.requests, args.scenario, args.data, run_dir / "live.jsonl")
        with Stack(services, log_dir=run_dir, on_ready=on_ready) as stack:
            print(f"All {len(stack.services)} services ready after {since_start()}.")
            route = ensure_route(ports, token, args.model_repo)
            transactions = live.result()
            url = f"http://{LOOPBACK}:{ports.router}/v1/models/fraud:predict"
            first = send(url, transactions[0])
            _, status, body = first
            outcome = (f"{body['predictions'][0]['decision']} by {body['predictions'][0]['model_version']}"
                       if status == 200 else json.dumps(body)[:200])
            print(f"{FIRST_REQUEST} {since_start()} after start: HTTP {status}, {outcome}.")
            print(f"Sending {len(transactions)} requests, {args.concurrency} at a time ...")
            summary = burst(url, transactions, args.concurrency, first)
            print(summary_text(summary, ports, route, token, run_dir))
            print(curl_examples(ports, {key: transactions[0][key] for key in RAW_FIELDS}, token, route))
            if args.exit:
                return 0 if summary["errors"] == 0 else 1
            print("Up. Press Ctrl-C to stop.")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
    except StackError as e:
        print(f"make up failed: {e}", file=sys.stderr)
        return 1
    finally:
        simulator.shutdown(wait=True, cancel_futures=True)
        print("\nStopped every service this run started.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
