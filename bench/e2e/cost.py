"""The hot path's cost per transaction: CPU of every service per request, latency, capacity, per-stage times.

What issue 12 asks to be measured before the path is optimised. The local stack (scripts/localstack.py:
router -> transformer -> features, predictor; every inference logged to drift) on free ports, on a copy of
`make up`'s data (the stream step and drift write to it) and the model repo as it is. Real live transactions
(`python -m flywheel_core.sim live`), each sent once, as JSON to the router's KServe V1 endpoint. The load
comes from vegeta (Go, open loop at a constant rate, pinned to one core; built on first use, see vegeta.py),
whose own CPU is reported. Warm-up: --warmup seconds at 50 req/s, then traffic until the drift service's first
MMD run is over (its one-off import of alibi-detect and torch, ~13 CPU-seconds; `warm_mmd`), so every step is the
steady state. Per rate step:

- vegeta's report: achieved rate, errors, p50/p90/p99/max;
- CPU-us per request of each service's process tree (its session: predictor or features workers included)
  from /proc, the window closing once the transformer's event and stream queues and drift's backlog have
  drained, so work done after the answer is counted; also net of each service's idle CPU (measured first);
- each service's histograms (scraped before/after): calls per transaction, mean and bucket p99 per stage;
- the CPU the rest of the machine used meanwhile, so a busy machine shows in the record.

Capacity: the highest step with p99 <= --slo-ms and no errors. CPU per request is robust to other load;
latency is not, so the record says how busy the machine was.

    python3 bench/e2e/cost.py [--rates 10,25,50,75,100,150,200] [--duration 12] [--source DIR]
    python3 bench/e2e/cost.py --markdown   # the tables of the last run, for docs/benchmarks.md

Standard library only (the simulator runs in the features venv). Needs `make install` and a trained model.
--source runs the services' code from another checkout with this checkout's venvs, so a commit can be measured
as it was committed (others' uncommitted edits left out) or a baseline side by side:
    git archive C libs services feature_repo | tar -x -C DIR && git rev-parse C > DIR/COMMIT
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import prom
import report
import vegeta

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]
from up import RAW_FIELDS, ensure_route  # noqa: E402

from benchkit import busy_cpu_seconds, cpu_model, latest_version, log, session_cpu_seconds  # noqa: E402
from localstack import Ports, Stack, default_services, free_port, post_json, router_token, venv_python  # noqa: E402

SERVICES = ("router", "transformer", "features", "predictor", "drift")
# Work a request leaves behind after its answer: logged inferences and stream-step transactions in the
# transformer's queues, events drift accepted but has not analysed yet.
QUEUES = {
    "transformer": ("flywheel_transformer_event_queue_records",
                    "flywheel_transformer_feature_stream_queue_transactions"),
    "drift": ("flywheel_drift_backlog_rows",),
}
# Counters that say the path degraded (a fallback is fast and wrong) or served defaults instead of features
# (a different amount of work from production's): reported per step when they move.
TROUBLE = r"fail|drop|error|fallback|timeout|unsent|retr|rejected|overload|shed|missing|unknown|unseen"


def live_transactions(n: int, data_dir: Path, out: Path) -> list[dict]:
    """`n` live transactions continuing the history in `data_dir` from its recorded end.

    The end is passed explicitly: `live` otherwise derives it from the preset's length today, and a history
    made under an older preset (30 days, not 60) would be continued a month late, every feature past its
    max age and the transformer refusing the transactions beyond its future-skew limit (422).
    """
    end = json.loads((data_dir / "simulation.json").read_text())["end"]
    subprocess.run([venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--n", str(n),
                    "--data", str(data_dir), "--start", end, "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def copy_data(source: Path, target: Path) -> Path:
    """The data without the state a running stack owns (routes, admin token, drift spool), as the tests copy it."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("router", "drift"))
    return target


def from_source(services: list, source: Path) -> None:
    """Run every service's code (and shared libs) from `source` ahead of this checkout's editable installs."""
    paths = [str(p) for p in sorted(source.glob("libs/*/src")) + sorted(source.glob("services/*/src"))]
    for service in services:
        service.env["PYTHONPATH"] = os.pathsep.join(paths)
        if service.name == "features":
            service.env["FLYWHEEL_FEATURES_REPO_PATH"] = str(source / "feature_repo")


class Probe:
    """CPU of each service's session and of everything else, and the services' metrics, at one instant."""

    def __init__(self, stack: Stack, ports: Ports):
        self.pids = {name: stack[name].process.pid for name in SERVICES}
        self.urls = {name: f"http://127.0.0.1:{getattr(ports, name)}/metrics" for name in SERVICES}

    def cpu(self) -> dict:
        own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"t": time.monotonic(), "busy": busy_cpu_seconds(),
                "self": sum(u.ru_utime + u.ru_stime for u in own),
                **{name: session_cpu_seconds(pid) for name, pid in self.pids.items()}}

    def metrics(self, names=SERVICES) -> dict[str, prom.Samples]:
        return {name: prom.scrape(self.urls[name]) for name in names}

    def drain(self, limit_s: float = 60.0) -> float:
        """Wait until the queues are empty (polling only the two services that hold them); seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            samples = self.metrics(tuple(QUEUES))
            if all(prom.gauge(samples[s], g) == 0 for s, gauges in QUEUES.items() for g in gauges):
                return time.monotonic() - started
            time.sleep(0.25)
        log(f"  queues not drained after {limit_s:.0f} s; the CPU window closes anyway")
        return time.monotonic() - started


MMD_WARMUP_BATCH = 500
MMD_WARMUP_BATCHES = 12
"""The MMD warm-up sends up to this many batches of live transactions at 100 req/s (drift closes its first window
at WINDOW_ROWS, 2000, then runs MMD)."""


def warm_mmd(probe: Probe, send: Callable[[int], object]) -> float:
    """Send traffic until the drift service has finished its first MMD run; returns drift's CPU seconds meanwhile.

    The first run imports alibi-detect and torch (about 13 CPU-seconds), once per process, and then runs every
    MMD_INTERVAL_S (600 s) per version. Without this it landed in whichever rate step closed drift's first window
    (100-150 req/s here) and its import took the two cores from the servers: the step's drift CPU read ~5,000 us a
    transaction and its latency and errors were the import's. With it, every step is the steady state."""
    before = probe.cpu()["drift"]
    for i in range(MMD_WARMUP_BATCHES):
        if prom.gauge(probe.metrics(["drift"])["drift"], "flywheel_drift_mmd_seconds_count") >= 1:
            break
        send(i)
    deadline = time.monotonic() + 120
    while prom.gauge(probe.metrics(["drift"])["drift"], "flywheel_drift_mmd_seconds_count") < 1:
        if time.monotonic() > deadline:
            raise SystemExit("drift ran no MMD test in the warm-up: is MMD_ENABLED off?")
        time.sleep(1)
    return probe.cpu()["drift"] - before


def cpu_figures(before: dict, after: dict, requests: int, scored: int, idle_per_s: dict | None) -> dict:
    """CPU per request sent and per transaction scored (answered 200: shed or refused requests cost less, so
    past saturation the first understates the cost of the work done), raw and net of each service's idle CPU."""
    window = after["t"] - before["t"]
    used = {name: after[name] - before[name] for name in SERVICES}
    ours = sum(used.values()) + after["self"] - before["self"]
    figures = {
        "window_s": round(window, 2),
        "cpu_s": {name: round(v, 3) for name, v in used.items()},
        "other_processes_cores": round(max(0.0, after["busy"] - before["busy"] - ours) / window, 2),
    }
    for key, count in (("request", requests), ("scored_transaction", scored)):
        if not count:
            continue
        per = {name: 1e6 * v / count for name, v in used.items()}
        figures[f"cpu_us_per_{key}"] = {**{k: round(v) for k, v in per.items()}, "total": round(sum(per.values()))}
        if idle_per_s is not None:
            net = {name: max(0.0, 1e6 * (used[name] - idle_per_s[name] * window) / count) for name in SERVICES}
            figures[f"cpu_us_per_{key}_net_of_idle"] = {**{k: round(v) for k, v in net.items()},
                                                        "total": round(sum(net.values()))}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="`make up`'s data (copied, not changed)")
    parser.add_argument("--rates", default="10,25,50,75,100,150,200", help="comma-separated request rates (req/s)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per rate step")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds of warm-up at 50 req/s")
    parser.add_argument("--no-warm-mmd", dest="warm_mmd", action="store_false",
                        help="do not warm up until drift's first MMD run (its one-off import then lands in a step)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured before the steps")
    parser.add_argument("--slo-ms", type=float, default=50.0, help="p99 a step must hold to count as capacity")
    parser.add_argument("--stop-p99-ms", type=float, default=2000.0,
                        help="skip the higher rates once a step's p99 passes this (saturated: they would only queue)")
    parser.add_argument("--generator-cpu", type=int, default=(os.cpu_count() or 1) - 1,
                        help="core vegeta is pinned to (-1: not pinned); default the last one")
    parser.add_argument("--source", type=Path, help="run the services' code from this checkout (see above)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e-cost.json")
    parser.add_argument("--markdown", action="store_true", help="print the tables of --out and exit")
    args = parser.parse_args()
    if args.markdown:
        print(report.markdown(json.loads(args.out.read_text())))
        return 0

    rates = [float(r) for r in args.rates.split(",")]
    version = latest_version(args.model_repo, "fraud")
    if version is None:
        raise SystemExit(f"no published version of fraud in {args.model_repo}: run `make train` first")
    binary = vegeta.ensure(log)
    pin = None if args.generator_cpu < 0 or not shutil.which("taskset") else args.generator_cpu
    ports = Ports(*(free_port() for _ in range(6)))
    steps_n = [int(r * args.duration) for r in rates]
    warmup_n = int(50 * args.warmup)
    mmd_warmup_n = MMD_WARMUP_BATCH * MMD_WARMUP_BATCHES if args.warm_mmd else 0

    with tempfile.TemporaryDirectory(prefix="e2e-cost-") as tmp:
        tmp = Path(tmp)
        data = copy_data(args.data, tmp / "data")
        total_n = warmup_n + mmd_warmup_n + sum(steps_n) + 1
        log(f"simulating {total_n} live transactions ...")
        transactions = live_transactions(total_n, data, tmp / "live.jsonl")
        bodies = [json.dumps({"instances": [{k: t[k] for k in RAW_FIELDS}]}).encode() for t in transactions]
        url = f"http://127.0.0.1:{ports.router}/v1/models/fraud:predict"
        services = [s for s in default_services(args.model_repo, data, ports) if s.name in SERVICES]
        if args.source:
            from_source(services, args.source.resolve())
        log(f"starting {', '.join(s.name for s in services)} (logs in {tmp}/logs) ...")
        with Stack(services, tmp / "logs") as stack:
            route = ensure_route(ports, router_token(data), args.model_repo)
            status, answer = post_json(url, json.loads(bodies[0]))
            if status != 200:
                raise SystemExit(f"the router answered {status}: {answer}")
            log(f"route: {route.get('stable')}; first answer: {answer['predictions'][0]}")
            probe = Probe(stack, ports)
            cursor = 1

            def run_step(rate: float, n: int, name: str) -> tuple[vegeta.Attack, float]:
                nonlocal cursor
                targets = vegeta.write_targets(tmp / f"{name}.targets", url, bodies[cursor:cursor + n])
                cursor += n
                attack = vegeta.attack(binary, targets, rate, n / rate, tmp / f"{name}.bin", pin)
                return attack, probe.drain()

            log(f"warm-up: {warmup_n} requests at 50 req/s")
            run_step(50, warmup_n, "warmup")
            mmd_cpu_s = None
            if args.warm_mmd:
                mmd_cpu_s = warm_mmd(probe, lambda i: run_step(100, MMD_WARMUP_BATCH, f"warmup-mmd-{i}"))
                log(f"drift's first MMD run is over (drift CPU meanwhile {mmd_cpu_s:.1f} s, its one-off import of "
                    "alibi-detect and torch included)")
            before = probe.cpu()
            time.sleep(args.idle)
            idle = cpu_figures(before, probe.cpu(), 0, 0, None)
            idle_per_s = {name: idle["cpu_s"][name] / idle["window_s"] for name in SERVICES}
            log(f"idle CPU (cores): {', '.join(f'{k} {v:.3f}' for k, v in idle_per_s.items())}; "
                f"other processes {idle['other_processes_cores']} cores")

            steps = []
            for rate, n in zip(rates, steps_n, strict=True):
                load_before = os.getloadavg()[0]
                scraped, cpu_before = probe.metrics(), probe.cpu()
                attack, drain_s = run_step(rate, n, f"step-{rate:g}")
                cpu_after, scraped_after = probe.cpu(), probe.metrics()
                summary = attack.summary()
                stages = {name: prom.histogram_deltas(scraped[name], scraped_after[name]) for name in SERVICES}
                trouble = {name: prom.counter_deltas(scraped[name], scraped_after[name], TROUBLE) for name in SERVICES}
                step = {"target_rps": rate, "duration_s": args.duration, **summary, "drain_s": round(drain_s, 2),
                        **cpu_figures(cpu_before, cpu_after, summary["requests"], summary["status_codes"].get("200", 0),
                                      idle_per_s),
                        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                        "stages": stages, "degraded_counters": {k: v for k, v in trouble.items() if v}}
                steps.append(step)
                log(report.step_line(step))
                if summary["p99_ms"] > args.stop_p99_ms or summary["errors"] > 0.05 * summary["requests"]:
                    skipped = ", ".join(f"{r:g}" for r in rates if r > rate)
                    log(f"saturated at {rate:g} req/s: the higher rates ({skipped}) are skipped")
                    break

    held = [s["target_rps"] for s in steps if s["errors"] == 0 and s["p99_ms"] <= args.slo_ms
            and s["achieved_rps"] >= 0.95 * s["target_rps"]]
    busy = max(s["other_processes_cores"] for s in steps)
    # Drift's window and MMD tests run every so many rows and land in whichever step closes the window: over
    # all steps together each service's CPU is spread over all the transactions that caused it.
    scored = sum(s["status_codes"].get("200", 0) for s in steps)
    overall = {name: round(1e6 * sum(s["cpu_s"][name] for s in steps) / max(1, scored)) for name in SERVICES}
    overall["total"] = sum(overall.values())
    result = {
        "benchmark": "e2e-cost",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python3", *sys.argv]),
        "commit": source_commit(args.source) if args.source else git("rev-parse", "HEAD"),
        "code": str(args.source) if args.source else "this checkout's working tree",
        "working_tree_changes": [] if args.source else git("status", "--short", "--", "libs", "services").splitlines(),
        "model": f"fraud {version.name}",
        "machine": {"cpu_count": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                    "busy": busy > 0.25, "other_processes_cores_max": busy},
        "setup": {
            "path": "vegeta -> router V1 -> transformer -> features (Feast, SQLite) + predictor (V2); "
                    "events to drift, stream step to features",
            "generator": f"vegeta {vegeta.VERSION}, open loop, constant rate, "
                         + (f"taskset -c {pin}, GOMAXPROCS=1" if pin is not None else "not pinned"),
            "servers": "one process each unless their settings say otherwise; not pinned (all cores)",
            "slo_p99_ms": args.slo_ms,
        },
        "warmup_drift_mmd_cpu_s": None if mmd_cpu_s is None else round(mmd_cpu_s, 2),
        "idle_cpu_cores": {k: round(v, 4) for k, v in idle_per_s.items()},
        "capacity_rps": max(held) if held else 0,
        "cpu_us_per_scored_transaction_all_steps": overall,
        "goals": report.GOALS,
        "steps": steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"capacity (p99 <= {args.slo_ms:g} ms, no errors): {result['capacity_rps']:g} req/s; wrote {args.out}")
    print(report.markdown(result))
    return 0


def source_commit(source: Path) -> str | None:
    marker = source / "COMMIT"
    return marker.read_text().strip() if marker.is_file() else None


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
