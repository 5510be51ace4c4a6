"""Feature lookups from the features service over the chart's online store (Redis) and the local one (SQLite).

The cluster serves features from Redis (feature_repo/feature_store.cluster.yaml); every local figure so far
came from SQLite. This runs both side by side: one simulated history applied and materialized into each store,
the real features service (`python -m flywheel_features`, one worker) over each, and the transformer's lookup
(`POST /get-online-features`, one card and one merchant, the 8 online features) at a few concurrencies.

Redis is Debian's redis-server (hack/test/redis-server.sh installs it when missing), started here on a free
loopback port with a password and no persistence, and stopped at the end. The features server and Redis share
core 0 (all server-side work on one core in both cases), wrk runs on core 1. Closed loop: `--connections` each
send the next lookup when the answer arrives; each lookup names another card and merchant (a round-robin of
256 pairs). Rounds interleave the stores; figures are medians over rounds. CPU per lookup is user + system time
from /proc over the measurement, of the features server and of redis-server separately.

    python3 bench/features/online_stores.py [--size default] [--connections 1,4,16] [--duration 5] [--rounds 3]

Needs `make install` (services/features/.venv), wrk and taskset (`make bench-deps`). Writes
bench/results/features-online-stores.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from benchkit import cpu_model, cpu_seconds, free_port, log, lua_script, parse_wrk  # noqa: E402

FEATURES_PY = ROOT / "services" / "features" / ".venv" / "bin" / "python"
CLUSTER_YAML = "feature_store.cluster.yaml"
LOOKUP_FEATURES = [
    "card_activity:txn_count_1h", "card_activity:txn_count_24h", "card_activity:amount_sum_24h",
    "card_activity:amount_mean_30d", "card_activity:distinct_countries_24h", "merchant_risk:merchant_txn_count_7d",
    "merchant_risk:merchant_fraud_rate_30d", "merchant_risk:merchant_amount_mean_30d",
]
"""The transformer's lookup (services/transformer, ONLINE_FEATURE_REFS)."""

# apply + materialize into both stores in one process (Feast's import alone takes seconds); prints the id pairs.
PREPARE = """
import json, sys
from pathlib import Path
import pandas as pd
from flywheel_features import Settings, apply, materialize, open_store
from flywheel_core.feature_pipeline import read_parquet
repo, data = Path(sys.argv[1]), Path(sys.argv[2])
for store_yaml in sys.argv[3:]:
    settings = Settings(repo_path=repo, store_yaml=store_yaml, data_dir=data)
    apply(settings)
    materialize(open_store(settings))
frame = read_parquet(data / "transactions.parquet", columns=["card_id", "merchant_id"])
print(json.dumps(frame.sample(256, random_state=7).values.tolist()))
"""


def run(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{argv[:3]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result.stdout


def redis_server_binary() -> str:
    return run([str(ROOT / "hack" / "test" / "redis-server.sh")], {}).strip().splitlines()[-1]


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited ({process.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as e:
            e.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s:\n{log_path.read_text()[-2000:]}")


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def wrk(url: str, script: Path, seconds: int, connections: int, core: str) -> tuple[dict, float]:
    """One wrk run and wrk's own CPU seconds."""
    before = children_cpu()
    result = subprocess.run(
        ["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )
    return parse_wrk(result.stdout), children_cpu() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="default", help="simulator size of the history (small|default)")
    parser.add_argument("--connections", default="1,4,16", help="comma-separated wrk connection counts")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement (wrk: whole seconds)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--server-core", default="0", help="core of the features servers and redis-server")
    parser.add_argument("--load-core", default="1", help="core of wrk")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "features-online-stores.json")
    args = parser.parse_args()
    connection_counts = [int(c) for c in args.connections.split(",")]
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-features-") as scratch_name:
        scratch = Path(scratch_name)
        data = scratch / "data"
        password = secrets.token_urlsafe(24)
        redis_port = free_port()
        env = {"FLYWHEEL_DATA_DIR": str(data), "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port},password={password}",
               "FLYWHEEL_REGISTRY_PATH": str(data / "registry.redis.db")}
        processes: dict[str, subprocess.Popen] = {}
        try:
            binary = redis_server_binary()
            redis_version = run([binary, "--version"], {}).split()[2].removeprefix("v=")
            with open(scratch / "redis.log", "wb") as out:
                processes["redis-server"] = subprocess.Popen(
                    ["taskset", "-c", args.server_core, binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                     "--dir", str(scratch), "--save", "", "--appendonly", "no", "--requirepass", password],
                    stdout=out, stderr=subprocess.STDOUT)
            log(f"simulating a '{args.size}' history, applying and materializing it into SQLite and Redis")
            run([str(FEATURES_PY), "-m", "flywheel_core.sim", "history", "--out", str(data), "--size", args.size], env)
            pairs = json.loads(run([str(FEATURES_PY), "-c", PREPARE, str(ROOT / "feature_repo"), str(data),
                                    "feature_store.yaml", CLUSTER_YAML], env).strip().splitlines()[-1])
            simulation = json.loads((data / "simulation.json").read_text())

            read_token = scratch / "read-token"
            read_token.write_text(secrets.token_urlsafe(32))
            urls = {}
            for store, extra in (("sqlite", {}), ("redis", {"FLYWHEEL_FEATURES_STORE_YAML": CLUSTER_YAML})):
                port = free_port()
                server_env = {**os.environ, **env, **extra, "FLYWHEEL_FEATURES_HOST": "127.0.0.1",
                              "FLYWHEEL_FEATURES_PORT": str(port), "FLYWHEEL_FEATURES_READ_TOKEN_FILE": str(read_token),
                              "FLYWHEEL_FEATURES_LOG_LEVEL": "warning"}
                with open(scratch / f"features-{store}.log", "wb") as out:
                    processes[store] = subprocess.Popen(
                        ["taskset", "-c", args.server_core, str(FEATURES_PY), "-m", "flywheel_features"], cwd=ROOT,
                        env=server_env, stdout=out, stderr=subprocess.STDOUT)
                urls[store] = f"http://127.0.0.1:{port}"
            for store, url in urls.items():
                wait_ready(f"{url}/ready", processes[store], scratch / f"features-{store}.log")

            bodies = [json.dumps({"features": LOOKUP_FEATURES, "entities": {"card_id": [c], "merchant_id": [m]}})
                      for c, m in pairs]
            escaped = ", ".join('"' + b.replace("\\", "\\\\").replace('"', '\\"') + '"' for b in bodies)
            script = lua_script(
                scratch / "lookup.lua", bodies[0],
                f'wrk.headers["Authorization"] = "Bearer {read_token.read_text()}"\n'
                f"local bodies = {{{escaped}}}\nlocal i = 0\n"
                "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n")

            samples: dict[tuple[str, int], list[dict]] = {}
            for round_index in range(args.rounds):
                for connections in connection_counts:
                    order = list(urls) if round_index % 2 == 0 else list(reversed(urls))
                    for store in order:
                        url = f"{urls[store]}/get-online-features"
                        wrk(url, script, args.warmup, connections, args.load_core)
                        pids = {"features": processes[store].pid, "redis": processes["redis-server"].pid}
                        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                        figures, wrk_cpu = wrk(url, script, args.duration, connections, args.load_core)
                        n = max(1, figures["requests"])
                        figures["cpu_us_per_lookup"] = {
                            name: round(1e6 * (cpu_seconds(pid) - cpu_before[name]) / n, 1)
                            for name, pid in pids.items()
                            if name == "features" or store == "redis"
                        }
                        figures["cpu_us_per_lookup"]["wrk"] = round(1e6 * wrk_cpu / n, 1)
                        samples.setdefault((store, connections), []).append(figures)
                        log(f"round {round_index + 1} {store:>6} c={connections:<3} {figures['requests_per_s']:>8.0f} "
                            f"lookups/s p50 {figures['p50_ms']:.2f} ms p99 {figures['p99_ms']:.2f} ms "
                            f"cpu {figures['cpu_us_per_lookup']} non-2xx {figures['non_2xx']}")
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def median(runs: list[dict], *path: str) -> float:
        values = []
        for r in runs:
            value = r
            for key in path:
                value = value[key]
            values.append(value)
        return round(statistics.median(values), 2)

    results = []
    for connections in connection_counts:
        row: dict = {"connections": connections}
        for store in urls:
            runs = samples[(store, connections)]
            row[store] = {
                "lookups_per_s": median(runs, "requests_per_s"),
                "p50_ms": median(runs, "p50_ms"),
                "p99_ms": median(runs, "p99_ms"),
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "cpu_us_per_lookup": {
                    name: median(runs, "cpu_us_per_lookup", name) for name in runs[0]["cpu_us_per_lookup"]
                },
                "rounds": runs,
            }
        row["redis_over_sqlite_p50"] = round(row["redis"]["p50_ms"] / row["sqlite"]["p50_ms"], 2)
        results.append(row)
        print(f"c={connections:<3} sqlite p50/p99 {row['sqlite']['p50_ms']:.2f}/{row['sqlite']['p99_ms']:.2f} ms "
              f"{row['sqlite']['lookups_per_s']:.0f}/s cpu {row['sqlite']['cpu_us_per_lookup']} | redis p50/p99 "
              f"{row['redis']['p50_ms']:.2f}/{row['redis']['p99_ms']:.2f} ms {row['redis']['lookups_per_s']:.0f}/s "
              f"cpu {row['redis']['cpu_us_per_lookup']}", flush=True)

    report = {
        "benchmark": "features-online-stores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "load_average_before": round(load_before, 2),
        },
        "setup": {
            "history": {k: simulation[k] for k in ("size", "transactions", "start", "end")},
            "redis": f"redis-server {redis_version} (Debian), --save '' --appendonly no --requirepass, loopback",
            "servers": f"python -m flywheel_features, 1 worker each; features servers and redis-server on core "
            f"{args.server_core}, wrk on core {args.load_core}",
            "load": "wrk closed loop, one thread; each lookup 1 card + 1 merchant, 8 features, "
            "256 id pairs round-robin",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
