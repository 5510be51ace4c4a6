"""`make soak`: mixed traffic for ten minutes while a dependency of the transformer is killed every minute.

Issue 11 asks that no inference event be lost however the services around the transformer fail, that memory
stay flat and that no file descriptor leak. This script checks all three end to end on the local stack:

1. starts its own stack on free loopback ports (features, predictor, transformer, drift; no router: the traffic
   goes to the transformer, the service under test), serving the repository's model_repo/ and a fresh copy of
   data/ in its own run directory (default .run/soak/, with the logs and the drift service's spool): every
   scored transaction updates the features service's card state and offline store (its stream step), and ten
   thousand simulated ones, days ahead of the history, must not end up in the data a later `make up` serves
   or `make retrain` learns from. A running `make up` is never in the way;
2. sends --rps requests per second for --duration seconds to the transformer, paced by the clock: four in five
   are simulated live transactions, each with its own transaction_id, so every 200 is one prediction the drift
   service must end up holding; the fifth is invalid, rotating through malformed JSON, wrong types, a negative
   amount, an unknown field (ignored by the transformer, so scored: it carries a unique id too), a wrong
   method and an unknown route. Answers are counted by kind and status, a 503 `overloaded` with Retry-After
   (the transformer's admission control shedding load) as `shed`, apart from the other 503s;
3. every --kill-every seconds SIGKILLs one service, rotating through features, predictor and drift, and
   restarts it. Requests answered 503 while a dependency is down are expected and counted, not errors. The
   transformer itself is never killed: its event queue lives in its memory, so killing it loses what it
   holds by design (a pod's SIGTERM drains it for EVENT_DRAIN_TIMEOUT_S; a SIGKILL cannot);
4. samples the transformer's RSS (/proc/<pid>/status VmRSS) and open file descriptors (/proc/<pid>/fd);
5. when the traffic ends, waits (at most --drain-timeout) until the transformer has posted, dropped or given
   up every event and the drift report, computed after that, has analysed its backlog; then compares:
   lost = 200 answers - predictions_logged (summed over versions), RSS growth = median of the last minute's
   samples - median of the first minute's, fd growth = the same for open descriptors.

It prints a summary and writes it with the exact command to --out (default bench/results/soak.json). The exit
status is 1 when an event was lost, a request got an unexpected answer (a 5xx other than 503, none, or a 503
that is not shedding to a request that never reaches a dependency),
RSS grew by more than --max-rss-growth (20%) or open fds by more than --max-fd-growth (16), or a service did
not come back; 2 when the stack did not start. Standard library only, like scripts/up.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from up import RAW_FIELDS, live_transactions  # noqa: E402

from localstack import LOOPBACK, ROOT, Ports, Stack, StackError, default_services, free_port  # noqa: E402

MODEL = "fraud"
VICTIMS = ("features", "predictor", "drift")
"""Killed in turn. Not the transformer: its in-memory event queue would die with it (see the docstring)."""
INVALID = ("malformed_json", "wrong_types", "negative_amount", "unknown_field", "wrong_method", "unknown_route")
TRANSFORMER_EVENTS = ("events_sent_total", "events_retried_total", "events_dropped_total", "events_failed_total",
                      "events_unsent_total", "event_queue_records")
SHED = "shed"
"""The answers key of a request shed by admission control: 503, code `overloaded`, with Retry-After. The transformer
sheds before it reads the body, so any request may get it, malformed or not (services/transformer/README.md)."""
NOT_NOW = (429, 503)
"""Other answers that say "not now": a dependency down. Expected only for requests that reach the dependencies."""
REACH_DEPENDENCIES = ("valid", "unknown_field")
"""The kinds that are scored, so a features or predictor outage can fail them; the other kinds are refused first."""
SETTLE_S = 20.0
"""At the end, seconds without a new prediction logged after which the ones still missing count as lost."""


class Traffic:
    """Requests paced by the clock from one thread, answered by a pool; counts answers by kind and status."""

    def __init__(self, base: str, transactions: list[dict], concurrency: int, timeout_s: float) -> None:
        self.predict_url = f"{base}/v1/models/{MODEL}:predict"
        self.base, self.transactions, self.timeout_s = base, transactions, timeout_s
        self.next_valid = 0
        self.answers: dict[str, dict[str, int]] = {}
        """Kind -> status (as a string, "0" for no answer; SHED for load shed) -> count."""
        self.scored: dict[str, int] = {}
        """Model version -> 200 answers with a prediction (of any kind): what the drift service must hold."""
        self.skipped = 0
        """Requests not sent because --concurrency were already in flight."""
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(concurrency)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="soak-client")

    def request(self, kind: str, seq: int) -> tuple[str, str, bytes | None, str]:
        """(method, url, body, content type) of the `seq`th request of `kind`."""
        if kind == "valid":
            transaction = self.transactions[self.next_valid % len(self.transactions)]
            cycle = self.next_valid // len(self.transactions)
            self.next_valid += 1
            instance = {k: transaction[k] for k in RAW_FIELDS}
            if cycle:  # more traffic than simulated transactions: still one id per request
                instance["transaction_id"] += f"-{cycle}"
            return "POST", self.predict_url, json.dumps({"instances": [instance]}).encode(), "application/json"
        template = {k: self.transactions[seq % len(self.transactions)][k] for k in RAW_FIELDS}
        template["transaction_id"] = f"soak-{kind}-{seq}"  # unique, should any of them be scored
        body: object = {"instances": [template]}
        if kind == "malformed_json":
            return "POST", self.predict_url, b'{"instances": [{"amount": 12.5,', "application/json"
        if kind == "wrong_types":
            template.update(amount="12.50", card_id=12345)
        elif kind == "negative_amount":
            template["amount"] = -42.0
        elif kind == "unknown_field":
            template["loyalty_tier"] = "gold"
        elif kind == "wrong_method":
            return "GET", self.predict_url, None, "application/json"
        elif kind == "unknown_route":
            return "POST", f"{self.base}/v1/nowhere", json.dumps(body).encode(), "application/json"
        return "POST", self.predict_url, json.dumps(body).encode(), "application/json"

    def send(self, kind: str, seq: int) -> None:
        """Queue one request; counted as skipped when the client is already at its concurrency."""
        if not self.slots.acquire(blocking=False):
            with self.lock:
                self.skipped += 1
            return
        self.pool.submit(self._one, kind, *self.request(kind, seq))

    def _one(self, kind: str, method: str, url: str, body: bytes | None, content_type: str) -> None:
        version = None
        status: int | str
        try:
            request = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
                answer = json.loads(response.read())
            if status == 200 and "predictions" in answer:
                version = answer["predictions"][0].get("model_version", "?")
        except urllib.error.HTTPError as e:
            status = SHED if shed(e) else e.code
            e.close()
        except (OSError, ValueError):
            status = 0  # refused, reset, timed out or unreadable: the outcome is unknown
        finally:
            self.slots.release()
        with self.lock:
            by_status = self.answers.setdefault(kind, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1
            if version is not None:
                self.scored[version] = self.scored.get(version, 0) + 1

    def run(self, rps: float, duration_s: float, stopping: threading.Event) -> float:
        """Send for `duration_s` (or until `stopping`), wait for the answers; returns the seconds it ran."""
        started, i = time.monotonic(), 0
        while not stopping.is_set():
            due = started + i / rps
            if due - started >= duration_s:
                break
            if (delay := due - time.monotonic()) > 0 and stopping.wait(delay):
                break
            kind = INVALID[(i // 5) % len(INVALID)] if i % 5 == 4 else "valid"
            self.send(kind, i)
            i += 1
        elapsed = time.monotonic() - started
        self.pool.shutdown(wait=True)
        return elapsed


class Chaos(threading.Thread):
    """Every `every_s`, SIGKILL the next victim and restart it; records when, and for how long it was down."""

    def __init__(self, stack: Stack, every_s: float, started: float) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.stack, self.every_s, self.started = stack, every_s, started
        self.stopping = threading.Event()
        self.kills: list[dict] = []
        self.failure: str | None = None

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(max(0.0, self.started + (n + 1) * self.every_s - time.monotonic())):
            name = VICTIMS[n % len(VICTIMS)]
            n += 1
            killed = time.monotonic()
            self.stack.kill(name)
            print(f"  {killed - self.started:6.1f} s  killed {name} (SIGKILL); restarting", flush=True)
            try:
                self.stack.restart(name)
            except StackError as e:
                self.failure = f"{name} did not come back: {e}"
                print(f"  {self.failure}", flush=True)
                return
            down = time.monotonic() - killed
            self.kills.append({"service": name, "at_s": round(killed - self.started, 1), "down_s": round(down, 2)})
            print(f"  {time.monotonic() - self.started:6.1f} s  {name} ready again after {down:.1f} s", flush=True)


class Sampler(threading.Thread):
    """RSS (MiB) and open fds of one process every `every_s`, stamped with seconds since `started`."""

    def __init__(self, pid: int, every_s: float, started: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid, self.every_s, self.started = pid, every_s, started
        self.stopping = threading.Event()
        self.samples: list[tuple[float, float, int]] = []

    def sample(self) -> tuple[float, float, int] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None
        rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return round(time.monotonic() - self.started, 1), round(rss_kib / 1024, 1), fds

    def run(self) -> None:
        while True:
            if (sample := self.sample()) is not None:
                self.samples.append(sample)
            if self.stopping.wait(self.every_s):
                return


def shed(error: urllib.error.HTTPError) -> bool:
    """Whether an error answer is admission control shedding load (503 `overloaded` + Retry-After), not a failure."""
    if error.code != 503 or not error.headers.get("retry-after"):
        return False
    try:
        return json.loads(error.read()).get("code") == "overloaded"
    except (OSError, ValueError, AttributeError):
        return False


def get_json(url: str, timeout_s: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def counters(url: str, prefix: str) -> dict[str, float]:
    """Metric name (labels summed away) -> value, for the series of a /metrics page that start with `prefix`."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            if not name.endswith("_created"):  # prometheus_client's creation stamps, not counts
                values[name] = values.get(name, 0.0) + float(value)
    return values


def drain(ports: Ports, expected: int, timeout_s: float) -> tuple[dict, dict, float, bool]:
    """Wait until the transformer has dealt with every event and the drift service has analysed them.

    The transformer is done once its queue is empty and its sent + dropped + failed events cover two per
    scored request. The drift service is done once its backlog is empty and its report logs every
    prediction, or, when some are missing, once that count has not moved for SETTLE_S (the service
    publishes a report only when something changed, so `computed_at` may rightly predate the end of the
    traffic). Returns (transformer counters, drift report, seconds waited, whether it got there: False at
    the timeout, with the last of each).
    """
    started = time.monotonic()
    events = f"http://{LOOPBACK}:{ports.transformer}/metrics"
    posted = False
    sink: dict[str, float] = {}
    report: dict = {}
    logged, moved = -1, time.monotonic()
    while True:
        try:
            sink = counters(events, "flywheel_transformer_event")
            report = get_json(f"http://{LOOPBACK}:{ports.drift}/v1/report")
        except (OSError, ValueError):
            pass
        handled = sum(sink.get(f"flywheel_transformer_events_{k}_total", 0) for k in ("sent", "dropped", "failed"))
        posted = posted or (sink.get("flywheel_transformer_event_queue_records", 1) == 0 and handled >= 2 * expected)
        now_logged = sum(v.get("predictions_logged", 0) for v in report.get("versions", []))
        if now_logged != logged:
            logged, moved = now_logged, time.monotonic()
        if posted and report.get("backlog", {}).get("rows", 1) == 0 and (
            logged >= expected or time.monotonic() - moved > SETTLE_S
        ):
            return sink, report, time.monotonic() - started, True
        if time.monotonic() - started > timeout_s:
            return sink, report, time.monotonic() - started, False
        time.sleep(1.0)


def minute_medians(samples: list[tuple[float, float, int]], start: float, end: float) -> dict:
    """Medians of RSS and fds over the first and the last minute of [start, end] (seconds of the run)."""
    first = [s for s in samples if start <= s[0] <= start + 60] or samples[:1]
    last = [s for s in samples if end - 60 <= s[0] <= end] or samples[-1:]
    rss_first, rss_last = statistics.median(s[1] for s in first), statistics.median(s[1] for s in last)
    fds_first, fds_last = statistics.median(s[2] for s in first), statistics.median(s[2] for s in last)
    return {
        "rss_mib": {"first_minute_median": rss_first, "last_minute_median": rss_last,
                    "growth_mib": round(rss_last - rss_first, 1),
                    "growth_pct": round(100 * (rss_last - rss_first) / rss_first, 1),
                    "max": max(s[1] for s in samples)},
        "fds": {"first_minute_median": fds_first, "last_minute_median": fds_last,
                "growth": fds_last - fds_first, "first": samples[0][2], "last": samples[-1][2],
                "max": max(s[2] for s in samples)},
    }


def verdict(args: argparse.Namespace, result: dict) -> list[str]:
    """Why the soak failed (empty: it passed)."""
    why = []
    if result["events"]["lost"] > 0:
        why.append(f"{result['events']['lost']} inference events lost (200 answers the drift service does not hold)")
    if result["unexpected_answers"]:
        why.append(f"unexpected answers: {result['unexpected_answers']}")
    if result["rss_mib"]["growth_pct"] > args.max_rss_growth:
        why.append(f"transformer RSS grew {result['rss_mib']['growth_pct']}% (limit {args.max_rss_growth:g}%)")
    if result["fds"]["growth"] > args.max_fd_growth:
        why.append(f"transformer open fds grew by {result['fds']['growth']} (limit {args.max_fd_growth})")
    if result["restart_failure"]:
        why.append(result["restart_failure"])
    if not result["drained"]:
        why.append(f"the events did not drain within {args.drain_timeout:g} s")
    return why


def unexpected(answers: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Answers no client should get: a 5xx other than 503, no answer, a 4xx to a valid request (other than
    429), a 2xx to an invalid one (other than an unknown field, which the transformer ignores), or a 429/503 that
    is not shedding to a request refused before any dependency is asked. Shed answers are expected for any kind."""
    found = {}
    for kind, by_status in answers.items():
        bad = {}
        for status, n in by_status.items():
            if status == SHED:
                continue
            code = int(status)
            if code in NOT_NOW:
                if kind not in REACH_DEPENDENCIES:
                    bad[status] = n
                continue
            wrong_class = (kind == "valid") != (code == 200) and kind != "unknown_field"
            if code == 0 or code >= 500 or wrong_class:
                bad[status] = n
        if bad:
            found[kind] = bad
    return found


def copy_data(source: Path, target: Path) -> Path:
    """A fresh copy of the data directory for this run's stack (not the other runs' state kept in it: drift
    spools, rollouts, routes); the online store through SQLite's backup, so a `make up` writing it meanwhile
    cannot leave a torn copy."""
    online = source / "online_store.db"
    if not online.is_file():
        raise SystemExit(f"{source} has no online store: run `make train` (or `make features`) first")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("drift", "rollouts", "router", "online_store.db*"))
    src, dst = sqlite3.connect(f"file:{online}?mode=ro", uri=True), sqlite3.connect(target / online.name)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return target


def make_command(argv: list[str]) -> str:
    """The `make soak` line that runs `argv` (the Makefile passes --model-repo and --data itself)."""
    extra, skip = [], False
    for arg in argv:
        if skip or arg.split("=", 1)[0] in ("--model-repo", "--data"):
            skip = not skip and "=" not in arg
            continue
        extra.append(arg)
    return "make soak" + (f" SOAK_ARGS='{shlex.join(extra)}'" if extra else "")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run" / "soak", help="logs and the drift spool")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--rps", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills (default 60)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at most (default 32)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take (default 30)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the events at the end")
    parser.add_argument("--max-rss-growth", type=float, default=20.0, help="percent (default 20)")
    parser.add_argument("--max-fd-growth", type=int, default=16, help="descriptors (default 16)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join(["python", "scripts/soak.py", *sys.argv[1:]])

    model_repo, data_dir, run_dir = args.model_repo.resolve(), args.data.resolve(), args.run_dir.resolve()
    if not any((model_repo / MODEL).glob("v*/metadata.json")):
        print(f"{model_repo / MODEL} has no published version: run `make train` first", file=sys.stderr)
        return 2
    ports = Ports(*(free_port() for _ in range(6)))
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = copy_data(data_dir, run_dir / "data")
    services = [s for s in default_services(model_repo, data_dir, ports) if s.name != "router"]
    spool = run_dir / "drift"
    shutil.rmtree(spool, ignore_errors=True)  # count this run's predictions only
    services[0].env["FLYWHEEL_DRIFT_SPOOL_DIR"] = str(spool)
    valid_needed = int(args.duration * args.rps * 0.8) + 50
    transactions = live_transactions(min(valid_needed, 20_000), "none", data_dir, run_dir / "live.jsonl")

    print(f"Soak: {args.duration:g} s at {args.rps:g} req/s (4 in 5 valid) to the transformer; every "
          f"{args.kill_every:g} s one of {', '.join(VICTIMS)} is SIGKILLed and restarted (never the transformer: "
          f"its in-memory event queue would die with it). Logs in {run_dir}/.")
    try:
        with Stack(services, log_dir=run_dir) as stack:
            base = f"http://{LOOPBACK}:{ports.transformer}"
            traffic = Traffic(base, transactions, args.concurrency, args.timeout)
            for _ in range(10):  # warm up before the first RSS sample; counted (their events must arrive too)
                traffic.send("valid", 0)
            traffic.pool.shutdown(wait=True)
            traffic.pool = ThreadPoolExecutor(args.concurrency, thread_name_prefix="soak-client")
            started = time.monotonic()
            sampler = Sampler(stack["transformer"].process.pid, args.sample_every, started)
            chaos = Chaos(stack, args.kill_every, started)
            sampler.start()
            chaos.start()
            elapsed = traffic.run(args.rps, args.duration, threading.Event())
            traffic_ended = time.time()
            chaos.stopping.set()
            chaos.join()  # a restart under way finishes: every service is up for the drain
            sampler.stopping.set()
            sampler.join()
            expected = sum(traffic.scored.values())
            print(f"Traffic done after {elapsed:.0f} s; waiting for {2 * expected} events to reach the drift "
                  "service ...")
            sink, report, waited, drained = drain(ports, expected, args.drain_timeout)
            fds_after = Sampler(stack["transformer"].process.pid, 0, started).sample()
            drift_metrics = counters(f"http://{LOOPBACK}:{ports.drift}/metrics", "flywheel_drift_duplicate_events")
    except StackError as e:
        print(f"make soak failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted; every service this run started is stopped.", file=sys.stderr)
        return 130

    logged = {v["version"]: v.get("predictions_logged", 0) for v in report.get("versions", [])}
    total_logged = sum(logged.values())
    result = {
        "benchmark": "soak",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "make": make_command(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"duration_s": args.duration, "rps": args.rps, "kill_every_s": args.kill_every,
                     "victims": list(VICTIMS), "concurrency": args.concurrency, "timeout_s": args.timeout,
                     "invalid_kinds": list(INVALID), "not_killed": "transformer (its event queue is in memory)"},
        "traffic": {"seconds": round(elapsed, 1), "requests": sum(sum(s.values()) for s in traffic.answers.values()),
                    "shed": sum(s.get(SHED, 0) for s in traffic.answers.values()),
                    "skipped_at_concurrency_limit": traffic.skipped, "answers": traffic.answers,
                    "scored_by_version": traffic.scored},
        "kills": chaos.kills,
        "restart_failure": chaos.failure,
        "events": {
            "scored_requests": expected,
            "predictions_logged": logged,
            "lost": max(0, expected - total_logged),
            "extra": max(0, total_logged - expected),
            # A labelled counter appears only once counted: the ones absent are 0.
            "transformer": {k: int(sink.get(f"flywheel_transformer_{k}", 0)) for k in TRANSFORMER_EVENTS},
            "drift_duplicate_events_since_last_restart": int(
                drift_metrics.get("flywheel_drift_duplicate_events_total", 0)),
            "drain_wait_s": round(waited, 1),
            "report_computed_after_traffic_s": round(report.get("computed_at", 0) - traffic_ended, 1),
        },
        "drained": drained,
        **minute_medians(sampler.samples, 0.0, elapsed),
        "unexpected_answers": unexpected(traffic.answers),
        "samples": {"every_s": args.sample_every, "t_s_rss_mib_fds": sampler.samples,
                    "after_drain": fds_after},
    }
    result["fds"]["after_drain"] = fds_after[2] if fds_after else None
    failures = verdict(args, result)
    result["passed"], result["failures"] = not failures, failures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    ev, rss, fds = result["events"], result["rss_mib"], result["fds"]
    tr = ev["transformer"]
    kills = ", ".join(f"{k['service']} down {k['down_s']:.1f} s" for k in chaos.kills)
    answers = "; ".join(f"{kind} " + ", ".join(f"{n} x {s}" for s, n in sorted(by.items()))
                        for kind, by in traffic.answers.items())
    print("\n".join([
        f"Result: {result['traffic']['requests']} requests in {elapsed:.0f} s, {len(chaos.kills)} kill(s) "
        f"({kills or 'none'})",
        f"  answers      {answers}" + (f"; {traffic.skipped} not sent (client at its limit)" * bool(traffic.skipped)),
        f"  events       {expected} scored requests, {total_logged} predictions logged by the drift service "
        f"({', '.join(f'{v}: {n}' for v, n in sorted(logged.items())) or '-'}): lost {ev['lost']}, "
        f"extra {ev['extra']}; "
        f"transformer sent {tr.get('events_sent_total', 0)}, retried {tr.get('events_retried_total', 0)}, "
        f"dropped {tr.get('events_dropped_total', 0)}, failed {tr.get('events_failed_total', 0)} "
        f"(drained in {waited:.0f} s)",
        f"  memory       transformer RSS {rss['first_minute_median']} MiB (first minute, median) -> "
        f"{rss['last_minute_median']} MiB (last minute): {rss['growth_mib']:+} MiB ({rss['growth_pct']:+}%), "
        f"max {rss['max']}",
        f"  fds          {fds['first_minute_median']:g} (first minute, median) -> {fds['last_minute_median']:g} "
        f"(last minute): {fds['growth']:+g}; first {fds['first']}, last {fds['last']}, max {fds['max']}, "
        f"after the drain {fds['after_drain']}",
        f"  written      {args.out}",
        "PASSED" if not failures else "FAILED: " + "; ".join(failures),
    ]))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
