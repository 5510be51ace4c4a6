"""Benchmark: what the router costs per request next to nginx, what shadowing costs, and how exact its split is.

One run, everything side by side on the same cores: a predictor on the tiny or trained `fraud` model
(pinned to one core) and, on the other core, wrk plus the proxy under test: none (client -> predictor),
the router (`python -m flywheel_router`, once per upstream client it offers), nginx (Debian's package, a
weighted keep-alive upstream block of two servers that are both the predictor) and, as floors (one hop
that answers at once, no upstream), nginx's `return 200` and uvicorn with an app that answers at once.
Each is measured closed-loop (max throughput, `--connections`) and at a moderate paced load
(`--paced-connections`, each waiting `--paced-delay-ms` after an answer before its next request: wrk 4
cannot hold an open-loop rate as wrk2 does). Rounds are interleaved and figures are medians over rounds;
differences and ratios are taken within a round, then the median.

Then the router with a shadow candidate at 100% that answers after 50 ms, or is down; the candidate
share through the router process at 1/5/25/50% over 20k requests each (counted from response headers);
stickiness with the router's own code (100k keys, 5 -> 10 -> 25 -> 50%) and, for 1000 keys, through the
router process; and the router under cProfile, to show where its time goes. Writes
bench/results/router.json.

    python3 bench/router/run.py [--model-repo model_repo] [--duration 5] [--rounds 3]

Stdlib only; the servers run in services/predictor/.venv and services/router/.venv. With no published
`fraud` in --model-repo the tiny fixture model is published into a temporary repo; a second version (the
candidate) is always published there, never in --model-repo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import binomial

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PREDICTOR_PY = ROOT / "services" / "predictor" / ".venv" / "bin" / "python"
ROUTER_PY = ROOT / "services" / "router" / ".venv" / "bin" / "python"
MODEL = "fraud"

sys.path.insert(0, str(ROOT / "bench"))
from benchkit import cpu_model, cpu_seconds, free_port, latest_version, log, lua_script, parse_wrk  # noqa: E402

TOKEN = "bench-router-token"
STICKY_HEADER = "x-card-id"
FLOOR_BODY = (
    '{"model_name":"fraud","model_version":"v1",'
    '"outputs":[{"name":"probability","shape":[1,1],"datatype":"FP32","data":[0.5]}]}'
)


# -- model -----------------------------------------------------------------------------------------------
def prepare_repo(source: Path, scratch: Path) -> tuple[Path, str, str, str, int]:
    """(repo, stable, candidate, description, input width): a scratch repo with two versions of the model."""
    repo = scratch / "model_repo"
    tiny = [str(PREDICTOR_PY), str(ROOT / "services" / "predictor" / "tests" / "tiny_model.py"), "--repo", str(repo)]
    real = latest_version(source, MODEL)
    if real is not None:
        shutil.copytree(real, repo / MODEL / real.name)
        description = f"{MODEL} {real.name} from {source} (candidate: the tiny fixture model, published next)"
    else:
        subprocess.run(tiny, check=True, stdout=subprocess.DEVNULL)
        description = f"tiny fixture model (no published '{MODEL}' in {source}), v1 stable and v2 candidate"
    subprocess.run(tiny, check=True, stdout=subprocess.DEVNULL)
    stable, candidate = sorted(
        (p for p in (repo / MODEL).iterdir() if p.name[1:].isdigit()), key=lambda p: int(p.name[1:])
    )[-2:]
    dims = {int(json.loads((v / "metadata.json").read_text())["input"]["shape"][1]) for v in (stable, candidate)}
    if len(dims) != 1:
        raise RuntimeError(f"stable and candidate take different input widths {dims}")
    return repo, stable.name, candidate.name, description, dims.pop()


# -- processes -------------------------------------------------------------------------------------------
class Processes:
    """The servers of this run: started pinned to a core, logs in the scratch directory, all stopped at the end."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], core: str, env: dict | None = None) -> subprocess.Popen:
        out = open(self.scratch / f"{name}.log", "wb")
        process = subprocess.Popen(["taskset", "-c", core, *command], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.running[name] = process
        return process

    def wait(self, name: str, port: int, path: str | None = None, timeout: float = 90) -> None:
        process, deadline = self.running[name], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
            try:
                if path is None:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return
                status, _, _ = request(port, "GET", path)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready on :{port} after {timeout}s:\n{self.tail(name)}")

    def tail(self, name: str) -> str:
        return "\n".join((self.scratch / f"{name}.log").read_text(errors="replace").splitlines()[-15:])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.running.pop(name)
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            connection: http.client.HTTPConnection | None = None) -> tuple[int, dict, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        if connection is None:
            conn.close()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- admin API -------------------------------------------------------------------------------------------
class Admin:
    def __init__(self, port: int) -> None:
        self.port = port
        self.auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}

    def put_route(self, route: dict) -> None:
        status, _, body = request(self.port, "GET", f"/v1/routes/{MODEL}", headers=self.auth)
        generation = json.loads(body)["generation"] if status == 200 else 0
        status, _, body = request(
            self.port, "PUT", f"/v1/routes/{MODEL}", json.dumps(route | {"generation": generation}).encode(), self.auth
        )
        if status not in (200, 201):
            raise RuntimeError(f"PUT route: {status} {body[:300]!r}")
        time.sleep(0.6)  # the other router processes poll the shared route file every 0.25 s

    def shadow(self) -> dict:
        status, _, body = request(self.port, "GET", f"/v1/stats/{MODEL}", headers=self.auth)
        if status != 200:
            raise RuntimeError(f"GET stats: {status} {body[:300]!r}")
        return json.loads(body)["shadow"]

    def drain_shadow(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shadow = self.shadow()
            if shadow["compared"] >= shadow["mirrored"]:
                return
            time.sleep(0.2)


# -- wrk -------------------------------------------------------------------------------------------------
COUNT_LUA = """
local limit, n, counts = {limit}, 0, {{}}
function response(status, headers, body)
  if n >= limit then return end
  n = n + 1
  local route, version = "-", "-"
  for k, v in pairs(headers) do
    local name = string.lower(k)
    if name == "x-flywheel-route" then route = v elseif name == "x-flywheel-model-version" then version = v end
  end
  local scored = string.match(body or "", '"model_version"%s*:%s*"([^"]*)"') or "-"
  local key = status .. "|" .. route .. "|" .. version .. "|" .. scored
  counts[key] = (counts[key] or 0) + 1
  if n == limit then
    for k, c in pairs(counts) do io.write("COUNT " .. k .. " " .. c .. "\\n") end
    io.flush()
    os.exit(0)  -- wrk's main thread would otherwise sleep out -d
  end
end
"""

def wrk(url: str, script: Path, seconds: float, connections: int, core: str, pids: dict[str, int]) -> dict:
    """One wrk run; CPU time per request of each process in `pids` and of wrk itself."""
    command = [
        "taskset",
        "-c",
        core,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wrk_before = children_cpu()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wrk_cpu = children_cpu() - wrk_before
    figures = parse_wrk(result.stdout)
    n = max(1, figures["requests"])
    figures["cpu_us_per_request"] = {
        name: round(1e6 * (cpu_seconds(pid) - before[name]) / n, 1) for name, pid in pids.items()
    }
    figures["cpu_us_per_request"]["wrk"] = round(1e6 * wrk_cpu / n, 1)
    return figures


# -- phases ----------------------------------------------------------------------------------------------
def measure_rounds(configs: list[dict], admin: Admin, scripts: dict, args: argparse.Namespace) -> dict:
    modes = {"closed": (scripts["closed"], args.connections), "paced": (scripts["paced"], args.paced_connections)}
    collected: dict = {c["name"]: {m: [] for m in modes if m in c["modes"]} for c in configs}
    current_route = None
    for index in range(args.rounds):
        log(f"round {index + 1}/{args.rounds}")
        for config in configs:
            if config.get("route") is not None and config["route"] != current_route:
                admin.put_route(config["route"])
                current_route = config["route"]
            for mode in collected[config["name"]]:
                script, connections = modes[mode]
                wrk(config["url"], script, args.warmup, connections, args.load_core, {})
                shadow_before = admin.shadow() if config.get("shadow") else None
                figures = wrk(config["url"], script, args.duration, connections, args.load_core, config["pids"])
                if config.get("shadow"):
                    after = admin.shadow()
                    figures["shadow"] = {
                        k: after[k] - shadow_before[k] for k in ("mirrored", "dropped", "compared", "candidateErrors")
                    }
                    admin.drain_shadow()
                if figures["non_2xx"] or figures["socket_errors"]:
                    raise RuntimeError(
                        f"{config['name']} {mode}: {figures['non_2xx']} non-2xx, {figures['socket_errors']}"
                    )
                collected[config["name"]][mode].append(figures)
                cpu = ", ".join(f"{k} {v:.0f}" for k, v in figures["cpu_us_per_request"].items())
                log(
                    f"  {config['name']:13s} {mode:6s} {figures['requests_per_s']:7.0f} req/s  "
                    f"p50 {figures['p50_ms']:6.2f} ms  "
                    f"p99 {figures['p99_ms']:6.2f} ms  CPU us/req: {cpu}"
                    + (f"  shadow {figures['shadow']}" if "shadow" in figures else "")
                )
    return collected


def median_of(rounds: list[dict]) -> dict:
    out = {k: round(statistics.median(r[k] for r in rounds), 3) for k in ("requests_per_s", "p50_ms", "p99_ms")}
    out["cpu_us_per_request"] = {
        name: round(statistics.median(r["cpu_us_per_request"][name] for r in rounds), 1)
        for name in rounds[0]["cpu_us_per_request"]
    }
    if "shadow" in rounds[0]:
        out["shadow_per_round"] = [r["shadow"] for r in rounds]
    out["rounds"] = [{k: r[k] for k in ("requests_per_s", "p50_ms", "p99_ms")} for r in rounds]
    return out


def paired(collected: dict, a: str, b: str, mode: str, key: str, op: str) -> float | None:
    """Median over rounds of (b - a) or (b / a) for one figure, each pair from the same round."""
    if a not in collected or b not in collected:
        return None
    pairs = zip(collected[a][mode], collected[b][mode], strict=True)
    values = [(y[key] - x[key]) if op == "-" else (y[key] / x[key]) for x, y in pairs]
    return round(statistics.median(values), 3)


def split_through_router(
    admin: Admin, url: str, script_dir: Path, body: str, stable: str, candidate: str, args
) -> list[dict]:
    out = []
    for weight in args.split_weights:
        admin.put_route(
            {
                "model": MODEL,
                "stable": {"version": stable},
                "candidate": {"version": candidate},
                "candidateWeight": weight,
            }
        )
        script = lua_script(script_dir / f"count-{weight}.lua", body, COUNT_LUA.format(limit=args.split_requests))
        result = subprocess.run(
            ["taskset", "-c", args.load_core, "wrk", "-t1", f"-c{args.connections}", "-d120s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=150,
        )
        counts: dict[tuple, int] = {}
        for line in result.stdout.splitlines():
            if line.startswith("COUNT "):
                key, count = line[6:].rsplit(" ", 1)
                counts[tuple(key.split("|"))] = int(count)
        n = sum(counts.values())
        if n != args.split_requests:
            raise RuntimeError(f"split at {weight}%: counted {n} responses:\n{result.stdout}\n{result.stderr}")
        # what scored it: the predictor's answer body names the version (the headers say what the router chose)
        answered = sum(c for (status, _, _, scored), c in counts.items() if status == "200" and scored == candidate)
        check = binomial.check(answered, n, weight) | {
            "routed_to_candidate": sum(c for (_, route, _, _), c in counts.items() if route == "candidate"),
            "version_header_candidate": sum(c for (_, _, version, _), c in counts.items() if version == candidate),
            "non_200": sum(c for (s, _, _, _), c in counts.items() if s != "200"),
        }
        out.append(check)
        log(f"  split {weight:4.0f}%: candidate answered {check['share_percent']:.3f}% of {n} "
            f"(99% interval {check['interval_99_percent']}) -> {'within' if check['within_99'] else 'OUTSIDE'}")
    return out


def sticky_through_router(
    admin: Admin, port: int, body: str, stable: str, candidate: str, predicted: dict, keys: int
) -> dict:
    """Each of `keys` sticky keys through the router at each predicted weight: same version as the ring says?"""
    out, connection = {}, http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for weight, expected in predicted.items():
        admin.put_route({"model": MODEL, "stable": {"version": stable}, "candidate": {"version": candidate},
                         "candidateWeight": float(weight), "stickiness": {"header": STICKY_HEADER}})
        got = set()
        for i in range(keys):
            status, _, answer = request(
                port,
                "POST",
                f"/v2/models/{MODEL}/infer",
                body.encode(),
                {"content-type": "application/json", STICKY_HEADER: f"card-{i:07d}"},
                connection,
            )
            if status != 200:
                raise RuntimeError(f"sticky request {i}: {status}")
            if json.loads(answer).get("model_version") == candidate:
                got.add(i)
        out[weight] = {"candidate_keys": len(got), "expected": len(expected), "mismatches": len(got ^ set(expected))}
    connection.close()
    weights = list(predicted)
    return {"keys": keys, "weights": out, "matches_ring": all(v["mismatches"] == 0 for v in out.values()),
            "weights_checked": weights}


def profile_router(
    procs: Processes, env: dict, client: str | None, url_path: str, script: Path, scratch: Path, args
) -> dict:
    port, admin_port = free_port(), free_port()
    out = scratch / f"profile-{client or 'default'}.json"
    env = env | {"FLYWHEEL_ROUTER_HTTP_PORT": str(port), "FLYWHEEL_ROUTER_ADMIN_PORT": str(admin_port)}
    if client:
        env["FLYWHEEL_ROUTER_UPSTREAM_CLIENT"] = client
    name = f"profiled-router-{client or 'default'}"
    process = procs.start(
        name, [str(ROUTER_PY), str(HERE / "profiled_router.py"), "--out", str(out)], args.load_core, env
    )
    procs.wait(name, port, "/v2/health/ready")
    url = f"http://127.0.0.1:{port}{url_path}"
    wrk(url, script, args.warmup, args.connections, args.load_core, {})
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    cpu_before = cpu_seconds(process.pid)
    figures = wrk(url, script, args.duration, args.connections, args.load_core, {})
    cpu = cpu_seconds(process.pid) - cpu_before
    process.send_signal(signal.SIGUSR2)
    for _ in range(100):
        if out.exists() and out.stat().st_size:
            time.sleep(0.2)
            break
        time.sleep(0.1)
    procs.stop(name)
    summary = json.loads(out.read_text())
    n = figures["requests"]
    layers = {k: round(1e6 * v / n, 1) for k, v in summary["layers_cpu_s"].items()}
    layers["uvloop C event loop and socket I/O (not seen by cProfile)"] = round(
        1e6 * (cpu - summary["profiled_cpu_s"]) / n, 1
    )
    return {
        "client": client or "default",
        "under_profiler": {k: figures[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "requests")},
        "process_cpu_us_per_request": round(1e6 * cpu / n, 1),
        "layers_cpu_us_per_request": layers,
        "top_functions": [
            f | {"us_per_request": round(1e6 * f["tottime_s"] / n, 2)} for f in summary["top_functions"][:15]
        ],
    }


def nginx_config(scratch: Path, port: int, upstream_port: int) -> Path:
    conf = scratch / "nginx.conf"
    temp = " ".join(f"{k}_temp_path {scratch / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {scratch / 'nginx.pid'};
error_log {scratch / 'nginx-error.log'} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  {temp}
  upstream predictor {{
    server 127.0.0.1:{upstream_port} weight=95;
    server 127.0.0.1:{upstream_port} weight=5;
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location = /floor {{
      default_type application/json;
      return 200 '{FLOOR_BODY}';
    }}
    location / {{
      proxy_pass http://predictor;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return conf


def router_clients() -> list[str | None]:
    """The router's upstream clients (FLYWHEEL_ROUTER_UPSTREAM_CLIENT), default first; [None] if it has no choice."""
    code = (
        "import typing, json; from flywheel_router import Settings; f = Settings.model_fields.get('upstream_client'); "
        "print(json.dumps(None if f is None else "
        "[f.default] + [c for c in typing.get_args(f.annotation) if c != f.default]))"
    )
    out = subprocess.run([str(ROUTER_PY), "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out) or [None]


# -- main ------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians over them")
    parser.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    parser.add_argument("--paced-connections", type=int, default=4)
    parser.add_argument("--paced-delay-ms", type=float, default=8, help="pause after each answer, per connection")
    parser.add_argument("--split-weights", type=lambda s: [float(w) for w in s.split(",")], default=[1, 5, 25, 50])
    parser.add_argument("--split-requests", type=int, default=20_000)
    parser.add_argument("--sticky-keys", type=int, default=1000, help="keys sent through the router per weight")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1", help="core of wrk and the proxy under test")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router.json")
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux"), ("nginx", "nginx")):
        if shutil.which(tool) is None:
            log(f"{tool} is not installed: make bench-deps (apt-get install -y {package})")
            return 2
    for python in (PREDICTOR_PY, ROUTER_PY):
        if not python.exists():
            log(f"{python} missing: run `make install` first")
            return 2

    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-router-") as scratch_name:
        scratch = Path(scratch_name)
        procs = Processes(scratch)
        try:
            result = run(procs, scratch, args)
        finally:
            procs.stop_all()
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps(result["summary"], indent=2))
    log(f"-> {args.out} ({result['wall_s']} s)")
    return 0


def run(procs: Processes, scratch: Path, args: argparse.Namespace) -> dict:
    repo, stable, candidate, description, dim = prepare_repo(args.model_repo.resolve(), scratch)
    row = [round(0.1 * (i % 7) + 0.05, 2) for i in range(dim)]
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, dim], "datatype": "FP32", "data": row}]})
    infer = f"/v2/models/{MODEL}/infer"
    scripts = {"closed": lua_script(scratch / "closed.lua", body),
               "paced": lua_script(scratch / "paced.lua", body, f"function delay() return {args.paced_delay_ms} end\n")}

    # predictor (server core): the stable as its default version, the candidate loaded at start
    predictor_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_PREDICTOR_", "FLYWHEEL_ROUTER_"))}
    procs.start("predictor", [str(PREDICTOR_PY), "-m", "flywheel_predictor"], args.server_core, env | {
        "FLYWHEEL_PREDICTOR_MODEL_REPO": str(repo), "FLYWHEEL_PREDICTOR_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_PREDICTOR_HTTP_PORT": str(predictor_port), "FLYWHEEL_PREDICTOR_MODEL_VERSION": stable,
        "FLYWHEEL_PREDICTOR_VERSIONS": candidate, "FLYWHEEL_PREDICTOR_VARIANT": "fp32",
        "FLYWHEEL_PREDICTOR_PROVIDERS": "CPUExecutionProvider"})
    procs.wait("predictor", predictor_port, "/v2/health/ready")
    status, headers, answer = request(predictor_port, "POST", infer, body.encode(),
                                      {"content-type": "application/json", "x-flywheel-model-version": candidate})
    scored = json.loads(answer).get("model_version") if status == 200 else None
    version_header = {"sent": candidate, "status": status, "body_model_version": scored,
                      "response_header": headers.get("x-flywheel-model-version"), "accepted": scored == candidate}
    log(f"model: {description}; predictor with x-flywheel-model-version: {candidate} -> {version_header}")

    # proxies and helpers (load core; the slow shadow candidate on the server core)
    (scratch / "token").write_text(TOKEN + "\n")
    routes_file = scratch / "routes.json"
    stable_only = {"model": MODEL, "stable": {"version": stable}}
    routes_file.write_text(json.dumps({"routes": {MODEL: stable_only}}))
    router_env = env | {
        "FLYWHEEL_ROUTER_HTTP_HOST": "127.0.0.1", "FLYWHEEL_ROUTER_ADMIN_HOST": "127.0.0.1",
        "FLYWHEEL_ROUTER_TOKEN_FILE": str(scratch / "token"), "FLYWHEEL_ROUTER_ROUTE_SOURCE": "file",
        "FLYWHEEL_ROUTER_ROUTES_FILE": str(routes_file), "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": f"http://127.0.0.1:{predictor_port}"}
    clients = router_clients()
    routers = {}
    for client in clients:
        name = "router" if client == clients[0] else f"router-{client}"
        port, admin_port = free_port(), free_port()
        procs.start(name, [str(ROUTER_PY), "-m", "flywheel_router"], args.load_core, router_env | {
            "FLYWHEEL_ROUTER_HTTP_PORT": str(port), "FLYWHEEL_ROUTER_ADMIN_PORT": str(admin_port),
            "FLYWHEEL_ROUTER_REPLICA_NAME": name} | ({"FLYWHEEL_ROUTER_UPSTREAM_CLIENT": client} if client else {}))
        procs.wait(name, port, "/v2/health/ready")
        routers[name] = {"port": port, "admin": Admin(admin_port), "client": client}
    nginx_port, floor_port, slow_port, dead_port = free_port(), free_port(), free_port(), free_port()
    procs.start("nginx", ["nginx", "-p", str(scratch), "-e", str(scratch / "nginx-error.log"),
                          "-c", str(nginx_config(scratch, nginx_port, predictor_port))], args.load_core)
    procs.wait("nginx", nginx_port)
    procs.start("floor", [str(ROUTER_PY), str(HERE / "floor_app.py"), "--port", str(floor_port)], args.load_core, env)
    procs.wait("floor", floor_port)
    procs.start(
        "slow-candidate",
        [sys.executable, str(HERE / "slow_upstream.py"), "--port", str(slow_port), "--delay-ms", "50"],
        args.server_core,
    )
    procs.wait("slow-candidate", slow_port)

    admin = routers["router"]["admin"]
    status, headers, answer = request(
        routers["router"]["port"], "POST", infer, body.encode(), {"content-type": "application/json"}
    )
    if status != 200 or json.loads(answer).get("model_version") != stable:
        raise RuntimeError(f"router -> predictor: {status} {answer[:200]!r}")
    pid = {name: p.pid for name, p in procs.running.items()}
    shadow_route = {"model": MODEL, "stable": {"version": stable}, "shadowPercent": 100}
    configs = [
        {"name": "direct", "url": f"http://127.0.0.1:{predictor_port}{infer}", "pids": {"predictor": pid["predictor"]}},
        {
            "name": "nginx",
            "url": f"http://127.0.0.1:{nginx_port}{infer}",
            "pids": {"predictor": pid["predictor"], "proxy": pid["nginx"]},
        },
        {"name": "nginx-floor", "url": f"http://127.0.0.1:{nginx_port}/floor", "pids": {"proxy": pid["nginx"]}},
        {"name": "uvicorn-floor", "url": f"http://127.0.0.1:{floor_port}{infer}", "pids": {"proxy": pid["floor"]}},
        *(
            {
                "name": name,
                "url": f"http://127.0.0.1:{r['port']}{infer}",
                "route": stable_only,
                "pids": {"predictor": pid["predictor"], "proxy": pid[name]},
            }
            for name, r in routers.items()
        ),
        *(
            {
                "name": f"shadow-{kind}",
                "url": f"http://127.0.0.1:{routers['router']['port']}{infer}",
                "shadow": True,
                "route": shadow_route | {"candidate": {"version": candidate, "endpoint": f"http://127.0.0.1:{port}"}},
                "pids": {
                    "predictor": pid["predictor"],
                    "proxy": pid["router"],
                    "slow-candidate": pid["slow-candidate"],
                },
            }
            for kind, port in (("slow", slow_port), ("down", dead_port))
        ),
    ]
    for config in configs:
        config.setdefault("modes", ("closed", "paced"))
    log(f"predictor on core {args.server_core}; wrk and proxies on core {args.load_core}; router clients {clients}; "
        f"{args.duration}s x {args.rounds} rounds, closed {args.connections} connections, "
        f"paced {args.paced_connections} connections + {args.paced_delay_ms} ms pause")
    collected = measure_rounds(configs, admin, scripts, args)

    log("split through the router process")
    split = split_through_router(
        admin, f"http://127.0.0.1:{routers['router']['port']}{infer}", scratch, body, stable, candidate, args
    )
    log("stickiness with the router's code")
    sticky = json.loads(subprocess.run(
        [str(ROUTER_PY), str(HERE / "split_check.py"), "--candidate", candidate, "--predict", "10,25",
         "--predict-keys", str(args.sticky_keys)], capture_output=True, text=True, check=True).stdout)
    predicted = sticky.pop("predicted")
    sticky["through_router"] = sticky_through_router(
        admin, routers["router"]["port"], body, stable, candidate, predicted, args.sticky_keys
    )
    log(
        f"  monotone over 100k keys: {sticky['monotone']}; "
        f"router process agrees with the ring: {sticky['through_router']['matches_ring']}"
    )
    admin.put_route(stable_only)

    profiles = []
    if not args.no_profile:
        log("router under cProfile")
        for client in clients:
            profiles.append(profile_router(procs, router_env, client, infer, scripts["closed"], scratch, args))
            log(f"  {profiles[-1]['client']}: {profiles[-1]['layers_cpu_us_per_request']}")
    return report(collected, configs, split, sticky, profiles, version_header, description, dim, clients, args)


def report(collected, configs, split, sticky, profiles, version_header, description, dim, clients, args) -> dict:
    servers = {name: {mode: median_of(rounds) for mode, rounds in modes.items()} for name, modes in collected.items()}
    figures = {}
    for mode in ("closed", "paced"):
        f = figures[mode] = {}
        for proxy in [n for n in collected if n.startswith("router") or n == "nginx"]:
            f[f"{proxy}_added_p50_ms"] = paired(collected, "direct", proxy, mode, "p50_ms", "-")
            f[f"{proxy}_added_p99_ms"] = paired(collected, "direct", proxy, mode, "p99_ms", "-")
            f[f"{proxy}_throughput_over_direct"] = paired(collected, "direct", proxy, mode, "requests_per_s", "/")
        nginx_added = f["nginx_added_p50_ms"]
        f["router_added_over_nginx_added_p50"] = (
            round(f["router_added_p50_ms"] / nginx_added, 2) if nginx_added and nginx_added > 0 else None
        )
        for kind in ("slow", "down"):
            for key in ("p99_ms", "p50_ms", "requests_per_s"):
                f[f"shadow_{kind}_{key.removesuffix('_ms')}_over_off"] = paired(
                    collected, "router", f"shadow-{kind}", mode, key, "/"
                )
    figures["proxy_cpu_us_per_request_closed"] = {
        name: servers[name]["closed"]["cpu_us_per_request"]["proxy"]
        for name in servers
        if "proxy" in servers[name]["closed"]["cpu_us_per_request"]
    }
    figures["serving_floor_p50_ms"] = {  # client -> a server that answers at once, no upstream: one hop's cost
        f"{name} {mode}": servers[name][mode]["p50_ms"]
        for name in ("nginx-floor", "uvicorn-floor")
        for mode in ("paced", "closed")
    }
    paced, closed = figures["paced"], figures["closed"]
    goals = {
        "router_added_p50_at_most_0.5ms (paced)": {
            "value": paced["router_added_p50_ms"],
            "met": paced["router_added_p50_ms"] <= 0.5,
        },
        "router_added_p50_at_most_2x_nginx (paced)": {
            "value": paced["router_added_over_nginx_added_p50"],
            "met": paced["router_added_over_nginx_added_p50"] is not None
            and paced["router_added_over_nginx_added_p50"] <= 2,
        },
        "router_throughput_at_least_0.8_of_direct (closed)": {
            "value": closed["router_throughput_over_direct"],
            "met": closed["router_throughput_over_direct"] >= 0.8,
        },
        **{
            f"shadow_{kind}_primary_p99_within_5pct ({mode})": {
                "value": figures[mode][f"shadow_{kind}_p99_over_off"],
                "met": figures[mode][f"shadow_{kind}_p99_over_off"] <= 1.05,
            }
            for kind in ("slow", "down")
            for mode in ("paced", "closed")
        },
        "split_within_binomial_99": {
            "value": [s["share_percent"] for s in split],
            "met": all(s["within_99"] for s in split),
        },
        "sticky_keys_never_leave_candidate": {
            "value": [s["candidate_to_stable"] for s in sticky["steps"]],
            "met": sticky["monotone"] and sticky["through_router"]["matches_ring"],
        },
    }
    return {
        "benchmark": "router",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model()},
        "setup": {
            "model": description,
            "input_dim": dim,
            "request": "one row per request, V2 JSON",
            "load_tool": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "router_clients": clients,
            "closed_connections": args.connections,
            "paced": f"{args.paced_connections} connections, each pausing {args.paced_delay_ms} ms after an answer "
            "(wrk 4 delay(); not an open-loop rate: wrk2 is not packaged)",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "statistic": "median over rounds; differences and ratios paired within a round, then the median",
            "predictor_version_header": version_header,
            "configs": {c["name"]: {k: v for k, v in c.items() if k in ("route", "modes")} for c in configs},
        },
        "summary": {"figures": figures, "goals": goals},
        "servers": servers,
        "split_through_router": split,
        "stickiness": sticky,
        "profile": profiles,
        "notes": [
            "added_p50/p99: the proxy's latency minus direct's, paired within a round, median over rounds; "
            "paced is the latency at a moderate load, closed is at saturation "
            "(where queueing, not the proxy, sets p50).",
            "throughput_over_direct: closed-loop requests/s through the proxy over direct. The predictor's core is the "
            "bottleneck in both, so a proxy can come out above 1.0; the proxy's CPU per request (cpu_us_per_request, "
            "from /proc) is the steadier measure of its own cost.",
            "shadow_*_over_off: the router with a 100% shadow to a candidate that answers after 50 ms (slow) or where "
            "nothing listens (down), over the router with no shadow, same round.",
            "profile: the router under cProfile with a CPU-time clock (slower than unprofiled: compare layers as "
            "shares, not absolute figures).",
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
