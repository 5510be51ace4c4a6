"""Benchmark: the predictor against a minimal ASGI + onnxruntime server, single-row V1 and V2, on one core.

Each server (the baseline, the predictor, and for reference a stock kserve.ModelServer) is started in
turn pinned to the same core with taskset; wrk, pinned to another core, drives it with the same
request, duration and connection count. Rounds are interleaved (baseline, predictor, stock, baseline,
...) so drift in a shared machine's load hits every server alike; each figure is the median over
rounds. Writes bench/results/predictor.json.

    python3 bench/predictor/run.py [--model-repo model_repo] [--duration 5] [--connections 8] [--rounds 5]

Stdlib only (the Makefile runs it with the bare interpreter); the servers run in the predictor's
environment, services/predictor/.venv. With no published `fraud` in --model-repo the tiny fixture
model (services/predictor/tests/tiny_model.py) is published into a temporary repo instead, so the
real repo is never touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREDICTOR = ROOT / "services" / "predictor"
PYTHON = PREDICTOR / ".venv" / "bin" / "python"
HERE = Path(__file__).resolve().parent
MODEL = "fraud"

sys.path.insert(0, str(ROOT / "bench"))
from benchkit import cpu_model, cpu_seconds, free_port, latest_version, log, lua_script, parse_wrk  # noqa: E402


def model_for_bench(repo: Path, scratch: Path) -> tuple[Path, Path, str]:
    """(repo, version dir, description): the given repo's latest fraud, or the tiny fixture model."""
    version = latest_version(repo, MODEL)
    if version is not None:
        return repo, version, f"{MODEL} {version.name} from {repo}"
    tiny = scratch / "model_repo"
    subprocess.run(
        [str(PYTHON), str(PREDICTOR / "tests" / "tiny_model.py"), "--repo", str(tiny)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return tiny, latest_version(tiny, MODEL), f"tiny fixture model (no published '{MODEL}' in {repo})"


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready ({url})")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout}s ({url})")


def server_command(kind: str, repo: Path, onnx: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    """Command, environment and readiness URL of one server under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_PREDICTOR_")}
    if kind == "predictor":
        env.update(
            FLYWHEEL_PREDICTOR_MODEL_REPO=str(repo),
            FLYWHEEL_PREDICTOR_HTTP_HOST="127.0.0.1",
            FLYWHEEL_PREDICTOR_HTTP_PORT=str(port),
            FLYWHEEL_PREDICTOR_VARIANT="fp32",  # the file the baseline loads
            FLYWHEEL_PREDICTOR_PROVIDERS="CPUExecutionProvider",
        )
        return [str(PYTHON), "-m", "flywheel_predictor"], env, f"http://127.0.0.1:{port}/v2/health/ready"
    script = {"baseline": "baseline.py", "baseline-inline": "baseline.py", "stock-kserve": "stock_kserve.py"}[kind]
    command = [str(PYTHON), str(HERE / script), "--onnx", str(onnx), "--port", str(port)]
    if kind == "baseline-inline":
        command.append("--inline")
    ready = f"http://127.0.0.1:{port}/v2/health/ready" if kind == "stock-kserve" else None
    return command, env, ready or ""


def requests_for(dim: int) -> dict[str, tuple[str, str]]:
    row = [round(0.1 * (i % 7) + 0.05, 2) for i in range(dim)]
    return {
        "v1": (f"/v1/models/{MODEL}:predict", json.dumps({"instances": [row]})),
        "v2": (
            f"/v2/models/{MODEL}/infer",
            json.dumps({"inputs": [{"name": "input", "shape": [1, dim], "datatype": "FP32", "data": row}]}),
        ),
    }


def drive(url: str, script: Path, seconds: int, connections: int, load_core: str, pid: int) -> dict[str, float]:
    command = [
        "taskset",
        "-c",
        load_core,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    cpu_before = cpu_seconds(pid)
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = cpu_seconds(pid) - cpu_before
    figures = parse_wrk(result.stdout)
    # CPU time per request is steadier than requests/s on a machine other work shares.
    figures["server_cpu_us_per_request"] = 1e6 * cpu / max(1, figures["requests"])
    return figures


def one_round(kind: str, repo: Path, onnx: Path, requests: dict, scripts: dict, args: argparse.Namespace) -> dict:
    port = free_port()
    command, env, ready = server_command(kind, repo, onnx, port)
    process = subprocess.Popen(
        ["taskset", "-c", args.server_core, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    figures = {}
    try:
        if ready:
            wait_ready(ready, process)
        else:
            _wait_port(port, process)
        for protocol, (path, _) in requests.items():
            url = f"http://127.0.0.1:{port}{path}"
            drive(url, scripts[protocol], args.warmup, args.connections, args.load_core, process.pid)
            figures[protocol] = drive(
                url, scripts[protocol], args.duration, args.connections, args.load_core, process.pid
            )
            if figures[protocol]["non_2xx"]:
                raise RuntimeError(f"{kind} {protocol}: {figures[protocol]['non_2xx']} non-2xx responses")
            f = figures[protocol]
            log(f"  {kind:15s} {protocol}: {f['requests_per_s']:8.0f} req/s  p50 {f['p50_ms']:.2f} ms  "
                f"p99 {f['p99_ms']:.2f} ms  server CPU {f['server_cpu_us_per_request']:.0f} us/request")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return figures


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def median_figures(rounds: list[dict]) -> dict:
    keys = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    return {key: round(statistics.median(r[key] for r in rounds), 3) for key in keys} | {"rounds": [
        {key: round(r[key], 3) for key in keys} for r in rounds
    ]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before each measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; figures are medians over them")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock kserve.ModelServer reference")
    parser.add_argument(
        "--inline-baseline", action="store_true",
        help="also measure the baseline calling session.run on its event loop (which the predictor may not do)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "predictor.json")
    args = parser.parse_args()

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            log(f"{tool} is not installed: apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'}")
            return 2
    if not PYTHON.exists():
        log(f"{PYTHON} missing: run `make install` (or uv sync in services/predictor) first")
        return 2

    kinds = ["baseline", "predictor"] + ([] if args.no_stock else ["stock-kserve"])
    if args.inline_baseline:
        kinds.append("baseline-inline")
    with tempfile.TemporaryDirectory(prefix="bench-predictor-") as scratch:
        repo, version, model_description = model_for_bench(args.model_repo.resolve(), Path(scratch))
        metadata = json.loads((version / "metadata.json").read_text())
        dim = int(metadata["input"]["shape"][1])
        onnx = version / metadata["variants"]["fp32"]["file"]
        requests = requests_for(dim)
        scripts = {p: lua_script(Path(scratch) / f"{p}.lua", body) for p, (_, body) in requests.items()}
        log(f"model: {model_description}; server core {args.server_core}, wrk core {args.load_core}, "
            f"{args.connections} connections, {args.duration}s x {args.rounds} rounds")
        collected: dict[str, dict[str, list]] = {kind: {"v1": [], "v2": []} for kind in kinds}
        for index in range(args.rounds):
            log(f"round {index + 1}/{args.rounds}")
            for kind in kinds:
                for protocol, figures in one_round(kind, repo, onnx, requests, scripts, args).items():
                    collected[kind][protocol].append(figures)

    servers = {
        kind: {p: median_figures(rounds) for p, rounds in by_protocol.items()}
        for kind, by_protocol in collected.items()
    }
    ratios = {
        p: round(servers["predictor"][p]["requests_per_s"] / servers["baseline"][p]["requests_per_s"], 3)
        for p in ("v1", "v2")
    }
    cpu_ratios = {
        p: round(
            servers["baseline"][p]["server_cpu_us_per_request"] / servers["predictor"][p]["server_cpu_us_per_request"],
            3,
        )
        for p in ("v1", "v2")
    }
    result = {
        "benchmark": "predictor",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model()},
        "setup": {
            "model": model_description,
            "input_dim": dim,
            "request": "one row per request",
            "load_tool": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "statistic": "median over rounds",
        },
        "servers": servers,
        "ratio_predictor_over_baseline": ratios,
        "cpu_efficiency_predictor_over_baseline": cpu_ratios,
        "notes": [
            "ratio_predictor_over_baseline: median requests/s of the predictor over the baseline's "
            "(>= 1.0: the predictor is at least as fast).",
            "cpu_efficiency_predictor_over_baseline: baseline server CPU per request over the predictor's; "
            "steadier than requests/s when other work shares the machine.",
        ],
    }
    for other in ("stock-kserve", "baseline-inline"):
        if other in servers:
            result[f"ratio_{other.replace('-', '_')}_over_baseline"] = {
                p: round(servers[other][p]["requests_per_s"] / servers["baseline"][p]["requests_per_s"], 3)
                for p in ("v1", "v2")
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"ratio predictor/baseline (requests/s): v1 {ratios['v1']}, v2 {ratios['v2']}; "
        f"CPU per request baseline/predictor: v1 {cpu_ratios['v1']}, v2 {cpu_ratios['v2']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
