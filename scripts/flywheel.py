"""`make flywheel`: the closed loop on the local stack, end to end and visibly, no cluster and no person.

The Makefile has installed every project and trained a first version. This script, on its own copy of the data
and the model repository under `.run/flywheel/<time>/` (the user's are only read):

1. starts the stack (features, predictor, transformer, drift, router) with the route serving the user's serving
   version (its route's stable, else the newest version its gates did not reject);
2. sends the simulator's live traffic of one scenario (`concept` by default: a new fraud pattern the old model
   has never seen) through the router, 8 transactions a request at 300 a second (a simulated day every ~5 s: the
   default world makes ~1,370 a day) while nothing happens, 30 a second, one a request, while a retraining runs
   and is rolled out, then fast again; the label feed delivers the labels that have come due every 3 s
   (chargebacks: frauds ~2 simulated days late, legitimate rows when the 7-day window closes). Simulated time ends
   ~30 days after the history (the transformer's ceiling on future timestamps), which sizes everything below;
3. runs the controller's local mode on an embedded RetrainPolicy (POLICY, MODES): a performance trigger,
   Stateful (fine-tune the serving version) when it published its weights, else Stateless, and a Canary rollout
   template judged on the router's counters;
4. prints one line per event (alert, run started, version published, its gates, rollout steps, verdict) and a
   status line every few seconds (simulated time, requests, decline rate, labelled PR-AUC and traffic share per
   version);
5. at the end (the run's verdict and a settling time, or --duration) prints the timeline, scores the same
   recent labelled window with the old and the new version, and writes a self-contained HTML timeline
   (timeline.html in the run directory; with --record also bench/results/flywheel.json).

Exit status: 0 when a new version reached 100% and beats the old one's PR-AUC on the same recent labelled window
(with --scenario none: when nothing was retrained); 1 otherwise, saying why; 130 on Ctrl-C.

Standard library only, like scripts/rollout.py: it runs on the bare interpreter.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout import MODEL, PRE_PUBLISH, RAW_FIELDS, Admin, stop, versions  # noqa: E402

from localstack import (  # noqa: E402
    ROOT,
    Ports,
    Stack,
    StackError,
    default_services,
    free_port,
    post_json,
    router_token,
    token,
    venv_python,
)

POLICY_NAME = f"{MODEL}-loop"
DAY_S = 86400.0
DATA_FILES = ("transactions.parquet", "card_activity.parquet", "merchant_risk.parquet", "simulation.json")
"""The history and its feature tables: the world before live traffic (no stream parts, no live labels)."""
SKEW_CEILING_S = 30 * 86400 - 2 * 3600
"""How far ahead of the clock a transaction may be stamped: the transformer refuses more than 30 days (its largest
MAX_FUTURE_SKEW_S), so a run's simulated time ends about 30 days after the history (which ends at 00:00 UTC of the
day `make data` ran)."""
MAX_TRANSACTIONS = 50_000
"""Live transactions simulated at most: ~36 days of the default world, past the ceiling."""
LABEL_WINDOW_DAYS = 7.0
"""The simulator's chargeback window: a transaction's label is known for certain this long after it."""

# Sized for the default world (~1,370 transactions and ~27 frauds a simulated day under `concept`) and the
# transformer's 30-day ceiling on simulated time (SKEW_CEILING_S), from what these runs measured:
# - labels arrive ~1,340 a simulated day once the first chargeback windows close (day 7), so 23,000 new labels is
#   about day 24.5;
# - the new pattern is hard to learn (its best single cue, online travel bookings, is ~16 % fraud), so a retraining
#   beats the serving version on the newest labelled window only with about two weeks of the changed world in its
#   training split: trained at day 21 it did not (PR-AUC gain -0.001, 90 % CI [-0.042, +0.033]), at day 25.5 it
#   did ([+0.011, +0.102]). Hence the whole history in the window (2160h) and the trainer's validation and test
#   splits at 5 % each rather than 15 %, which would hold the newest ~15 days out of training;
#   (Stateless; MODES);
# - per-slice PR-AUC has no confidence interval and slices of 5-20 frauds swing by 0.2 between two models whose
#   overall gain is significant (country=ES +0.20 in that run), so the slice gate only catches gross harm (0.25).
POLICY = """\
# Written by scripts/flywheel.py (make flywheel): retrain {model} ({mode}) when its labelled PR-AUC falls below
# {minimum}, once {min_new_labels} labels arrived, on the last {window}; the new version must beat the serving one on
# the newest labelled window, then takes traffic in canary steps judged every {interval}.
apiVersion: flywheel.dev/v1alpha1
kind: RetrainPolicy
metadata:
  name: {name}
spec:
  model: {model}
  triggers:
    # Not driftAlert: on unchanged traffic the drift service raised a performance alert at simulated day 7.8, when
    # the first legitimate labels arrive after a week of frauds only, and a data alert at day 3.
    performance: {{minimum: {minimum}, minLabels: 1000}}
    manual: true
  training:
    mode: {mode}
    window: {window}
    minNewLabels: {min_new_labels}{epochs}
  gates: {{minPRAUCGain: 0.0, ciLevel: 0.9, maxECEIncrease: 0.05, maxSlicePRAUCDrop: 0.25}}
  cooldown: 1h
  rolloutTemplate:
    spec:
      strategy:
        type: Canary
        canary:
          steps:
            - setWeight: 25
            - pause: {{duration: {pause}}}
            - setWeight: 50
            - pause: {{duration: {pause}}}
      analysis:
        interval: {interval}
        minSamples: 20
        failureLimit: 2
        # The router's counters only: a candidate at 25 % of {loop_rate:g} req/s closes no drift window within the
        # canary, and five analyses without a value pause the rollout for a person.
        metrics:
          - {{name: errors, provider: router, metric: error_rate, max: 0.02}}
          - {{name: latency, provider: router, metric: latency_p99_seconds, max: 0.5}}
          # A version that catches a new fraud pattern declines more, by about the pattern's share of traffic; a
          # broken one by far more (make rollout's harmful candidate: ~15 points).
          - {{name: declines, provider: router, metric: decline_rate, relativeToStable: true, max: 0.05, min: -0.05}}
      rollback: {{automatic: true}}
"""
MODES = {
    # Fine-tune the serving version's torch weights on the new data only (docs/benchmarks.md, "Stateful vs stateless
    # retraining": 0.532 vs v1's 0.392 held-out PR-AUC with two weeks of it): 19,000 labels is about day 21, and
    # 504h before that cut-off is the changed world's first two matured weeks. Default splits, 5 epochs.
    "Stateful": {"window": "504h", "min_new_labels": 19000, "epochs": 5, "trainer_env": {}},
    # From scratch: needs the whole history and the changed world in its training split (see above).
    "Stateless": {"window": "2160h", "min_new_labels": 23000, "epochs": None,
                  "trainer_env": {"FLYWHEEL_TRAINER_VALIDATION_FRACTION": "0.05",
                                  "FLYWHEEL_TRAINER_TEST_FRACTION": "0.05"}},
}
"""Stateful when the serving version published its weights (weights.torch.npz; versions trained before the trainer
did cannot be warm-started), else Stateless."""


SERVICE_ENV = {
    # Windows of 500 rows (default 2000): a window every few simulated hours at the fast pace.
    "drift": {"FLYWHEEL_DRIFT_WINDOW_ROWS": "500"},
    # Two inference events per request to the drift service: the default 2 senders fall behind at ~100 req/s on a
    # busy machine, and a dropped event is a prediction whose label can never be joined.
    "transformer": {"FLYWHEEL_TRANSFORMER_EVENT_SENDERS": "8", "FLYWHEEL_TRANSFORMER_EVENT_QUEUE_SIZE": "20000",
                    # Simulated time runs ahead of the clock: as far as the transformer allows (30 days).
                    "FLYWHEEL_TRANSFORMER_MAX_FUTURE_SKEW_S": str(30 * 86400)},
}


# -- the trainer's wrapper: wall and CPU time of each retraining --------------------------------------------------

def measure(out_dir: Path, argv: list[str]) -> int:
    """Run `argv`; write its wall and CPU seconds to `<out_dir>/<run>.usage.json` (the run from the controller's
    FLYWHEEL_TRAINER_RUN_ID) and exit with its status. SIGTERM (the controller stopping) is passed on."""
    started = time.monotonic()
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = os.environ.get("FLYWHEEL_TRAINER_RUN_ID") or "run"
    (out_dir / f"{name}.usage.json").write_text(json.dumps({
        "run": name, "exit": code, "wall_s": round(time.monotonic() - started, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}))
    return code


# -- set-up ------------------------------------------------------------------------------------------------------

def serving_version(model_repo: Path, data_dir: Path) -> str | None:
    """The version the user's route serves, else the newest one its gates did not reject."""
    try:
        routes = json.loads((data_dir / "router" / "routes.json").read_text())
        stable = routes["routes"][MODEL]["stable"]["version"]
        if (model_repo / MODEL / stable / "metadata.json").is_file():
            return stable
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for version in reversed(versions(model_repo)):
        if gates_of(model_repo, version).get("status") != "rejected":
            return version
    return None


def gates_of(model_repo: Path, version: str) -> dict:
    try:
        return json.loads((model_repo / MODEL / version / "metadata.json").read_text()).get("gates") or {}
    except (OSError, ValueError):
        return {}


def prepare(data_dir: Path, model_repo: Path, run_dir: Path) -> tuple[Path, Path]:
    """The run's own data (the history, re-applied to Feast there) and model repository (a copy)."""
    data, repo = run_dir / "data", run_dir / "model_repo"
    data.mkdir(parents=True)
    for name in DATA_FILES:
        shutil.copy2(data_dir / name, data / name)
    shutil.copytree(model_repo / MODEL, repo / MODEL, ignore=shutil.ignore_patterns(".staging-*"))
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(data)}
    for step in ("apply", "materialize"):  # the registry holds absolute paths: the copy needs its own
        result = subprocess.run([venv_python("services/features"), "-m", "flywheel_features", step], cwd=ROOT,
                                env=env, capture_output=True, text=True, start_new_session=True)
        if result.returncode != 0:
            raise StackError(f"feast {step} on the run's data failed:\n{result.stderr[-3000:]}")
    return data, repo


def simulate(scenario: str, n: int, data: Path, out: Path) -> list[dict]:
    result = subprocess.run(
        [venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", scenario, "--n", str(n),
         "--data", str(data), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, start_new_session=True)
    if result.returncode != 0:
        raise StackError(f"simulating live traffic failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    for row in rows:
        row["_t"] = epoch(row["event_timestamp"])
        row["_label_t"] = epoch(row["label_timestamp"])
    return rows


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- traffic -----------------------------------------------------------------------------------------------------

class Traffic(threading.Thread):
    """The live transactions through the router in order, `batch` to a request, at `rate` transactions a second,
    each answer kept: its version, decision and the exact model input (the transformer's debug features), so both
    versions can later score the same rows.

    At most `concurrency` requests are in flight: a stack that cannot keep up slows the sender down (the status
    line shows the rate reached) instead of queueing requests whose transactions would be scored long after the
    simulation's clock passed them. That clock is the event time of the newest transaction answered.
    """

    def __init__(self, url: str, transactions: list[dict], rate: float, batch: int, concurrency: int,
                 debug_token: Path, columns: list[str]) -> None:
        super().__init__(name="traffic", daemon=True)
        self.url, self.transactions, self.rate, self.batch = url, transactions, rate, batch
        self.concurrency = concurrency
        self.ended: str | None = None
        """Why the sender stopped by itself: every transaction sent, or the transformer's future-skew ceiling."""
        self.slots = threading.BoundedSemaphore(concurrency)
        self.headers = {"x-flywheel-debug-features": "1",
                        "authorization": f"Bearer {debug_token.read_text().strip()}"}
        self.columns = columns
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.errors = self.requests = 0
        self.sim_t = transactions[0]["_t"]
        """Event time of the newest transaction answered: the simulation's clock."""
        self.counts: dict[str, list[int]] = {}
        """version -> [answers, declines], cumulative."""
        self.answers: dict[str, tuple[str, float]] = {}
        """transaction id -> (version, score)."""
        self.inputs: dict[str, list[float]] = {}
        """transaction id -> the model input it was scored on."""

    def one(self, chunk: list[dict]) -> None:
        try:
            status, body = post_json(self.url, {"instances": [{k: t[k] for k in RAW_FIELDS} for t in chunk]},
                                     timeout_s=30, headers=self.headers)
            predictions = body["predictions"] if status == 200 else None
        except (OSError, ValueError, KeyError):
            predictions = None
        finally:
            self.slots.release()
        with self.lock:
            self.requests += 1
            if predictions is None or len(predictions) != len(chunk):
                self.errors += len(chunk)
                return
            for transaction, prediction in zip(chunk, predictions, strict=True):
                version = prediction["model_version"]
                count = self.counts.setdefault(version, [0, 0])
                count[0] += 1
                count[1] += prediction.get("decision") == "decline"
                self.answers[transaction["transaction_id"]] = (version, float(prediction["score"]))
                features = prediction.get("features") or {}
                if all(c in features for c in self.columns):
                    self.inputs[transaction["transaction_id"]] = [float(features[c]) for c in self.columns]
                self.sim_t = max(self.sim_t, transaction["_t"])

    def pace(self, rate: float, batch: int) -> None:
        with self.lock:
            self.rate, self.batch = rate, batch

    def run(self) -> None:
        with ThreadPoolExecutor(self.concurrency) as pool:
            next_at, i = time.monotonic(), 0
            while i < len(self.transactions):
                delay = next_at - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
                while not self.slots.acquire(timeout=0.5):  # all in flight: wait, and fall behind the schedule
                    if self.stopping.is_set():
                        return
                with self.lock:
                    rate, batch = self.rate, self.batch
                chunk = self.transactions[i:i + batch]
                if self.stopping.is_set() or chunk[-1]["_t"] > time.time() + SKEW_CEILING_S:
                    self.slots.release()
                    self.ended = None if self.stopping.is_set() else "the transformer's 30-day future-skew ceiling"
                    return
                i += len(chunk)
                next_at = max(next_at + len(chunk) / rate, time.monotonic() - 1.0)  # never a burst to catch up
                with self.lock:
                    self.sent += len(chunk)
                pool.submit(self.one, chunk)
            self.ended = "every simulated transaction sent"

    def snapshot(self) -> tuple[int, int, float, dict[str, list[int]]]:
        """(transactions sent, transactions not answered, the simulation's clock, answers by version)."""
        with self.lock:
            return self.sent, self.errors, self.sim_t, {v: list(c) for v, c in self.counts.items()}

    def stop(self) -> None:
        self.stopping.set()
        self.join(40)


# -- what the loop did, as it happens ----------------------------------------------------------------------------

def get_json(url: str, timeout_s: float = 5.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


class Monitor:
    """Reads the loop's state (the drift report, the route, the policy's status and Events, the rollouts' status,
    the model repository), turns every change into an event line and keeps one sample per poll for the figures."""

    def __init__(self, traffic: Traffic, admin: Admin, drift_url: str, state: Path, repo: Path, old: str,
                 change_t: float) -> None:
        self.traffic, self.admin, self.drift_url = traffic, admin, drift_url
        self.state, self.repo, self.old = state, repo, old
        self.change_t = change_t
        self.started = time.monotonic()
        self.events: list[dict] = []
        self.samples: list[dict] = []
        self.known_versions = set(versions(repo))
        self.new_versions: list[str] = []
        self.alerts: set[str] = set()
        self.policy_lines = 0
        self.decisions: dict[str, int] = {}
        self.phases: dict[str, str] = {}
        self.stable = old
        self.promoted_at: dict | None = None
        self.report: dict[str, dict] = {}
        self.policy: dict = {}
        self._last = (0, {})

    def now(self) -> tuple[float, float]:
        """(wall seconds since the traffic began, simulated days since the world changed)."""
        return time.monotonic() - self.started, (self.traffic.snapshot()[2] - self.change_t) / DAY_S

    def event(self, kind: str, text: str) -> None:
        wall, sim = self.now()
        self.events.append({"wall_s": round(wall, 1), "sim_days": round(sim, 3), "kind": kind, "text": text})
        print(f"[{wall:5.0f}s  day {sim:5.2f}] {kind:<9} {text}", flush=True)

    def poll(self) -> None:
        report = get_json(f"{self.drift_url}/v1/report?model={MODEL}")
        if report is not None:
            self.report = {v["version"]: v for v in report.get("versions", [])}
        for version, vr in sorted(self.report.items()):
            for alert in vr.get("alerts", []):
                if alert["id"] not in self.alerts:
                    self.alerts.add(alert["id"])
                    what = ", ".join(alert.get("features") or []) or (alert.get("performance") or {}).get("status", "")
                    self.event("alert", f"{version}: {alert['category']} ({alert['detector']}) {what}".rstrip())
        self._policy()
        self._published()
        self._rollouts()
        try:
            route = self.admin.route() or {}
        except (OSError, ValueError):
            route = {}
        stable = (route.get("stable") or {}).get("version")
        if stable and stable != self.stable:
            self.stable = stable
            if not route.get("candidate") or not route.get("candidateWeight"):
                self.event("promoted", f"{stable} serves 100% of {MODEL} (was {self.old})")
                wall, sim = self.now()
                self.promoted_at = {"wall_s": round(wall, 1), "sim_days": round(sim, 3), "version": stable}
        self._sample(route)

    def _policy(self) -> None:
        path = self.state / f"{POLICY_NAME}.events.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines[self.policy_lines:]:
            record = json.loads(line)
            self.event("policy", f"{record['reason']}: {record['message']}")
        self.policy_lines = len(lines)
        try:
            self.policy = json.loads((self.state / f"{POLICY_NAME}.retrainpolicy.json").read_text()).get("status") or {}
        except (OSError, ValueError):
            pass

    def _published(self) -> None:
        for version in versions(self.repo):
            if version in self.known_versions:
                continue
            self.known_versions.add(version)
            self.new_versions.append(version)
            gates = gates_of(self.repo, version)
            self.event("published", f"{version} ({gates.get('status', 'no gates')})")
            for check in gates.get("checks", []):
                mark = "pass" if check.get("passed") else "FAIL"
                self.event("gate", f"{version} {check['name']} {mark}: {check.get('reason') or ''}")

    def _rollouts(self) -> None:
        for path in sorted(self.state.glob("default_*.status.json")):
            name = path.name[len("default_"):-len(".status.json")]
            try:
                status = json.loads(path.read_text()).get("status") or {}
            except (OSError, ValueError):
                continue
            decisions = status.get("decisions") or []
            for decision in decisions[self.decisions.get(name, 0):]:
                weight = f" {decision['weight']}%" if decision.get("weight") is not None else ""
                self.event("rollout", f"{name} {decision.get('action')}{weight}: {decision.get('message', '')}")
            self.decisions[name] = len(decisions)
            phase = status.get("phase")
            if phase and phase != self.phases.get(name):
                self.phases[name] = phase
                self.event("verdict" if phase in ("Succeeded", "RolledBack", "Aborted", "Failed") else "rollout",
                           f"{name} {phase}: {status.get('message') or ''}")

    def _sample(self, route: dict) -> None:
        wall, sim = self.now()
        sent, errors, _, counts = self.traffic.snapshot()
        last_sent, last_counts = self._last
        self._last = (sent, counts)
        interval = {v: (c[0] - last_counts.get(v, [0, 0])[0], c[1] - last_counts.get(v, [0, 0])[1])
                    for v, c in counts.items()}
        answered = sum(n for n, _ in interval.values())
        per_version = {}
        for version in sorted(set(counts) | set(self.report)):
            n, declines = interval.get(version, (0, 0))
            vr = self.report.get(version) or {}
            performance = vr.get("performance") or {}
            window = vr.get("last_window") or {}
            p_values = [f["last"]["p_value"] for f in vr.get("features", [])
                        if f.get("last") and f["last"].get("p_value") is not None]
            per_version[version] = {
                "answered": n, "decline_rate": declines / n if n else None, "share": n / answered if answered else 0.0,
                "pr_auc": performance.get("pr_auc"), "pr_auc_rows": performance.get("rows"),
                "logged": vr.get("predictions_logged"), "labelled": vr.get("predictions_labelled"),
                "window": window.get("index"),
                "min_p": min(p_values) if p_values else None, "drift": vr.get("drift"),
            }
        self.samples.append({"wall_s": round(wall, 1), "sim_days": round(sim, 3), "sent": sent, "errors": errors,
                             "route": {"stable": (route.get("stable") or {}).get("version"),
                                       "candidate": (route.get("candidate") or {}).get("version"),
                                       "weight": route.get("candidateWeight") or 0},
                             "versions": per_version})

    def status_line(self) -> str:
        wall, sim = self.now()
        sent, errors, _, counts = self.traffic.snapshot()
        parts = []
        for version in sorted(counts):
            recent = [s["versions"].get(version) for s in self.samples[-5:]]
            n = sum(r["answered"] for r in recent if r)
            declines = sum(r["answered"] * (r["decline_rate"] or 0) for r in recent if r)
            share = n / max(1, sum(r2["answered"] for s in self.samples[-5:] for r2 in s["versions"].values()))
            if n == 0 and version != self.stable:
                continue
            vr = self.report.get(version) or {}
            perf = vr.get("performance") or {}
            pr_auc = f"{perf['pr_auc']:.2f}" if perf.get("pr_auc") is not None else "-"
            parts.append(f"{version} {share:4.0%} decl {declines / n if n else 0:5.1%} PR-AUC {pr_auc} "
                         f"({vr.get('predictions_labelled', 0):,} labels)")
        policy = self.policy.get("phase", "?")
        message = (self.policy.get("message") or "")[:90]
        recent = self.samples[-6:]
        span = recent[-1]["wall_s"] - recent[0]["wall_s"] if len(recent) > 1 else 0.0
        rate = sum(r["answered"] for s in recent[1:] for r in s["versions"].values()) / span if span else 0.0
        return (f"[{wall:5.0f}s  day {sim:5.2f}] status    {sent:,} tx ({rate:.0f}/s, {errors} unanswered) | "
                + " | ".join(parts) + f" | policy {policy}: {message}")


# -- the verdict: both versions on the same labelled window -------------------------------------------------------

def average_precision(labels: list[int], scores: list[float]) -> float | None:
    """PR-AUC as average precision, tied scores one threshold (the drift service's and the trainer's definition)."""
    positives = sum(labels)
    if positives == 0 or positives == len(labels):
        return None
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    total = tp = 0.0
    recall_before, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            tp += pairs[j][1]
            j += 1
        recall = tp / positives
        total += (recall - recall_before) * tp / j
        recall_before, i = recall, j
    return total


def score(predictor: str, version: str, inputs: list[list[float]]) -> list[float]:
    out: list[float] = []
    for start in range(0, len(inputs), 256):
        status, body = post_json(f"{predictor}/v1/models/{MODEL}:predict", {"instances": inputs[start:start + 256]},
                                 timeout_s=30, headers={"x-flywheel-model-version": version})
        if status != 200:
            raise StackError(f"the predictor answered {status} scoring {version}: {body}")
        out += [float(p[0]) for p in body["predictions"]]
    return out


def compare(traffic: Traffic, transactions: list[dict], repo: Path, old: str, new: str, predictor: str,
            resamples: int = 200) -> dict:
    """PR-AUC of `old` and `new` on the same rows: every transaction sent whose label is certain by now (older than
    the chargeback window) and that the new version did not train on (newer than its cut-off minus its label
    window), each scored on the model input it was served with."""
    lineage = json.loads((repo / MODEL / new / "metadata.json").read_text())["lineage"]
    trained_to = epoch(lineage["cutoff"]) - float(str(lineage.get("label_window", "7 days")).split()[0]) * DAY_S
    newest = traffic.snapshot()[2]
    rows = [t for t in transactions if trained_to < t["_t"] <= newest - LABEL_WINDOW_DAYS * DAY_S
            and t["transaction_id"] in traffic.inputs]
    result = {"rows": len(rows), "frauds": sum(t["is_fraud"] for t in rows), "old": old, "new": new,
              "from": rows[0]["event_timestamp"] if rows else None, "to": rows[-1]["event_timestamp"] if rows else None}
    if not rows or result["frauds"] == 0:
        return {**result, "reason": "no labelled rows after the new version's training data yet"}
    inputs = [traffic.inputs[t["transaction_id"]] for t in rows]
    labels = [int(t["is_fraud"]) for t in rows]
    p_old, p_new = score(predictor, old, inputs), score(predictor, new, inputs)
    result["pr_auc_old"], result["pr_auc_new"] = average_precision(labels, p_old), average_precision(labels, p_new)
    rng, gains = random.Random(0), []
    for _ in range(resamples):  # paired bootstrap of the difference, as the trainer's gate does
        pick = [rng.randrange(len(rows)) for _ in rows]
        a = average_precision([labels[i] for i in pick], [p_old[i] for i in pick])
        b = average_precision([labels[i] for i in pick], [p_new[i] for i in pick])
        if a is not None and b is not None:
            gains.append(b - a)
    gains.sort()
    if gains:
        result["gain_ci90"] = [round(gains[int(0.05 * len(gains))], 4), round(gains[int(0.95 * len(gains)) - 1], 4)]
    return result


# -- the HTML timeline -------------------------------------------------------------------------------------------

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
KIND_COLOURS = {"alert": "#d62728", "policy": "#9467bd", "published": "#2ca02c", "gate": "#2ca02c",
                "rollout": "#ff7f0e", "verdict": "#000000", "promoted": "#000000", "world": "#1f77b4",
                "pace": "#7f7f7f", "end": "#7f7f7f"}
PANELS = (
    ("decline_rate", "Decline rate (share of answers declined), per version", 0.0, None, False),
    ("pr_auc", "Labelled PR-AUC (drift service, newest 2,000 labels), per version", 0.0, 1.0, False),
    ("min_p", "Drift: smallest feature p-value of the last closed window (log scale), per version", 1e-6, 1.0, True),
    ("share", "Traffic share, per version", 0.0, 1.0, False),
)


def render_html(summary: dict, samples: list[dict], events: list[dict]) -> str:
    """A self-contained page: one SVG panel per figure over simulated time, every decision a numbered line."""
    import math

    versions_seen = sorted({v for s in samples for v in s["versions"]}, key=lambda v: int(v[1:]) if v[1:].isdigit()
                           else 0)
    colour = {v: COLOURS[i % len(COLOURS)] for i, v in enumerate(versions_seen)}
    x_max = max([s["sim_days"] for s in samples] + [e["sim_days"] for e in events] + [1.0])
    width, height, left, right, top, bottom = 960, 170, 56, 16, 10, 24
    marked = [e for e in events if e["kind"] != "gate"]

    def x(days: float) -> float:
        return left + (width - left - right) * max(0.0, days) / x_max

    panels = []
    for key, title, lo, hi, log in PANELS:
        values = [s["versions"][v][key] for s in samples for v in s["versions"]
                  if s["versions"][v].get(key) is not None]
        top_value = hi if hi is not None else max(values + [0.01]) * 1.15

        def y(value: float, lo: float = lo, top_value: float = top_value, log: bool = log) -> float:
            if log:
                value = math.log10(max(value, lo))
                low, high = math.log10(lo), math.log10(top_value)
            else:
                low, high = lo, top_value
            return top + (height - top - bottom) * (1 - (min(value, high) - low) / (high - low))

        parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img"><title>{html.escape(title)}</title>',
                 f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
                 'fill="#fafafa" stroke="#ccc"/>']
        ticks = [lo * 10 ** k for k in range(0, 7)] if log else [lo + (top_value - lo) * k / 4 for k in range(5)]
        for tick in ticks:
            label = f"1e{round(math.log10(tick))}" if log else (f"{tick:.0%}" if key in ("decline_rate", "share")
                                                               and top_value <= 1 else f"{tick:.2f}")
            parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{label}</text>')
        if log:
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0.05):.1f}" y2="{y(0.05):.1f}" '
                         'stroke="#999" stroke-dasharray="2 3"><title>p = 0.05</title></line>')
        for day in range(0, int(x_max) + 1, max(1, int(x_max) // 12)):
            parts.append(f'<text x="{x(day):.1f}" y="{height - 8}" text-anchor="middle" font-size="10">{day}</text>')
        for n, e in enumerate(marked, 1):
            c = KIND_COLOURS.get(e["kind"], "#666")
            parts.append(f'<line x1="{x(e["sim_days"]):.1f}" x2="{x(e["sim_days"]):.1f}" y1="{top}" '
                         f'y2="{height - bottom}" stroke="{c}" stroke-opacity="0.5" stroke-dasharray="3 2">'
                         f'<title>{n}. {html.escape(e["kind"] + ": " + e["text"])}</title></line>')
            parts.append(f'<text x="{x(e["sim_days"]) + 2:.1f}" y="{top + 9}" font-size="9" fill="{c}">{n}</text>')
        for version in versions_seen:
            points = [(s["sim_days"], s["versions"][version][key]) for s in samples
                      if version in s["versions"] and s["versions"][version].get(key) is not None
                      and (key != "decline_rate" or s["versions"][version]["answered"] >= 5)]
            if key == "share":
                points = [(s["sim_days"], s["versions"].get(version, {}).get("share", 0.0)) for s in samples]
            if points:
                path = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colour[version]}" stroke-width="1.6">'
                             f'<title>{version}</title></polyline>')
        parts.append("</svg>")
        panels.append(f"<h3>{html.escape(title)}</h3>\n" + "".join(parts))

    legend = " ".join(f'<span style="color:{colour[v]}">&#9632; {v}</span>' for v in versions_seen)
    rows = "\n".join(
        f'<tr><td>{n}</td><td>{e["sim_days"]:.2f}</td><td>{e["wall_s"]:.0f}</td>'
        f'<td style="color:{KIND_COLOURS.get(e["kind"], "#666")}">{html.escape(e["kind"])}</td>'
        f'<td>{html.escape(e["text"])}</td></tr>' for n, e in enumerate(marked, 1))
    gates = "\n".join(f"<li>{html.escape(e['text'])}</li>" for e in events if e["kind"] == "gate")
    figures = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in summary.items() if not isinstance(v, (dict, list)))
    compared = summary.get("comparison") or {}
    comparison = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                           for k, v in compared.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flywheel: {html.escape(summary.get('scenario', ''))}</title>
<style>body{{font:14px system-ui,sans-serif;max-width:1000px;margin:1em auto;color:#222}}
h3{{font-size:13px;margin:1.2em 0 .2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border-bottom:1px solid #eee;padding:2px 8px;text-align:left;vertical-align:top}}</style></head><body>
<h1>Flywheel: the loop on scenario <code>{html.escape(summary.get('scenario', ''))}</code></h1>
<p><b>{html.escape(summary.get('outcome', ''))}</b></p>
<p>x axis: simulated days since the world changed (live traffic began). Versions: {legend}.
Dashed lines: decisions, numbered as in the table below (hover for the text).</p>
{''.join(panels)}
<h2>Decisions</h2>
<table><tr><th>#</th><th>sim day</th><th>wall s</th><th>kind</th><th>what</th></tr>
{rows}</table>
<h2>Gates</h2><ul>{gates or '<li>none ran</li>'}</ul>
<h2>Old vs new on the same labelled window</h2><table>{comparison or '<tr><td>not compared</td></tr>'}</table>
<h2>Run</h2><table>{figures}</table>
</body></html>
"""


def timeline(events: list[dict]) -> str:
    return "\n".join(f"  day {e['sim_days']:6.2f}  {e['wall_s']:5.0f}s  {e['kind']:<9} {e['text']}" for e in events)


# -- the run -----------------------------------------------------------------------------------------------------

def start_controller(policy: Path, state: Path, repo: Path, data: Path, ports: Ports, log_path: Path,
                     trainer_env: dict[str, str]) -> subprocess.Popen:
    trainer = shlex.join([
        sys.executable, str(Path(__file__).resolve()), "--measure", str(state / "runs"), "--",
        venv_python("services/trainer"), "-m", "flywheel_trainer", "train",
        "--feature-repo", str(ROOT / "feature_repo"), "--data", str(data), "--model-repo", str(repo)])
    env = {**os.environ, "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": f"http://127.0.0.1:{ports.router_admin}",
           "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(router_token(data)),
           "FLYWHEEL_CONTROLLER_DRIFT_URL": f"http://127.0.0.1:{ports.drift}", "FLYWHEEL_CONTROLLER_HTTP_PORT": "0",
           "FLYWHEEL_DATA_DIR": str(data), "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": PRE_PUBLISH, **trainer_env}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [venv_python("services/controller"), "-m", "flywheel_controller", "--local", str(policy), "--state-dir",
             str(state), "--model-repo", str(repo), "--trainer-command", trainer],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_label_feed(data: Path, truth: Path, ports: Ports, interval: float, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [venv_python("services/features"), "-m", "flywheel_core.label_feed", "--data", str(data), "--truth",
             str(truth), "--drift-url", f"http://127.0.0.1:{ports.drift}", "--token-file",
             str(token(data, "drift-labels")), "--interval", str(interval)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def event_counters(transformer: str) -> dict[str, float]:
    """The transformer's inference-log counters (README, *Inference log*): were all events delivered?"""
    try:
        with urllib.request.urlopen(f"{transformer}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("flywheel_transformer_events_") and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0].removeprefix("flywheel_transformer_events_")
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def usage_of(state: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state / "runs").glob("*.usage.json"))]


def main() -> int | str:
    if len(sys.argv) > 3 and sys.argv[1] == "--measure" and "--" in sys.argv:
        return measure(Path(sys.argv[2]), sys.argv[sys.argv.index("--") + 1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["concept", "none", "covariate", "prior"], default="concept",
                        help="the simulator's live scenario (none: nothing changes, so nothing should retrain)")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo", help="read only: copied")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="read only: its history is copied")
    parser.add_argument("--run-dir", type=Path, default=None, help="default .run/flywheel/<UTC time>")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="transactions per second until a retraining starts (300: a simulated day every ~5 s)")
    parser.add_argument("--batch", type=int, default=8, help="transactions per request until then")
    parser.add_argument("--loop-rate", type=float, default=30.0,
                        help="transactions per second, one a request, from a retraining's start to its verdict (30: "
                             "about a simulated day a minute, so the loop's decisions fit before the ceiling)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most")
    parser.add_argument("--duration", type=float, default=600.0, help="wall seconds of traffic at most")
    parser.add_argument("--settle", type=float, default=25.0,
                        help="seconds of traffic at --rate after the run's verdict (more days to compare on)")
    parser.add_argument("--minimum", type=float, default=0.5, help="the performance trigger's PR-AUC minimum")
    parser.add_argument("--mode", choices=list(MODES), default=None,
                        help="the policy's training.mode (default Stateful when the serving version has weights)")
    parser.add_argument("--min-new-labels", type=int, default=None, help="the policy's training.minNewLabels")
    parser.add_argument("--window", default=None, help="the policy's training.window")
    parser.add_argument("--label-interval", type=float, default=3.0, help="seconds between label deliveries")
    parser.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    parser.add_argument("--record", action="store_true", help="write bench/results/flywheel.json")
    args = parser.parse_args()
    model_repo, data_dir = args.model_repo.resolve(), args.data.resolve()

    old = serving_version(model_repo, data_dir)
    if old is None:
        return f"{model_repo / MODEL} has no published version: run `make train` first"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = (args.run_dir or ROOT / ".run" / "flywheel" / stamp).resolve()
    state, logs = run_dir / "state", run_dir / "logs"
    print(f"Run directory {run_dir} (a copy of {data_dir}'s history and {model_repo / MODEL}); serving {old}",
          flush=True)
    started = time.monotonic()
    try:
        data, repo = prepare(data_dir, model_repo, run_dir)
        n = min(int(args.rate * (args.duration + 30)) + 1000, MAX_TRANSACTIONS)
        transactions = simulate(args.scenario, n, data, run_dir / "live.jsonl")
    except (OSError, StackError) as e:
        return f"make flywheel could not set up {run_dir}: {e}"
    state.mkdir()
    policy_file = state / "policy.yaml"
    mode_name = args.mode or ("Stateful" if (repo / MODEL / old / "weights.torch.npz").is_file() else "Stateless")
    mode = MODES[mode_name]
    epochs = f"\n    epochs: {mode['epochs']}" if mode["epochs"] else ""
    policy_file.write_text(POLICY.format(
        model=MODEL, name=POLICY_NAME, minimum=args.minimum, mode=mode_name, window=args.window or mode["window"],
        min_new_labels=args.min_new_labels or mode["min_new_labels"], epochs=epochs, pause="15s", interval="5s",
        loop_rate=args.loop_rate))
    if mode_name == "Stateless" and not args.mode:
        print(f"note: {old} has no published weights (weights.torch.npz) to fine-tune: the policy retrains Stateless, "
              "from scratch on the whole history (slower, smaller gain; `make retrain` publishes a version with "
              "weights)", flush=True)
    columns = [c["name"] for c in json.loads((repo / MODEL / old / "metadata.json").read_text())["input"]["columns"]]
    ports = Ports(features=free_port(), predictor=free_port(), transformer=free_port(), drift=free_port(),
                  router=free_port(), router_admin=free_port())
    services = default_services(repo, data, ports)
    for service in services:
        service.env.update(SERVICE_ENV.get(service.name, {}))
    traffic = feed = controller = None
    monitor: Monitor | None = None
    interrupted, ended_by = False, "--duration"
    comparison: dict = {}
    events: dict[str, float] = {}
    try:
        with Stack(services, log_dir=logs):
            admin = Admin(ports.router_admin, router_token(data))
            admin.ensure_stable(old)
            print(f"Stack ready in {time.monotonic() - started:.0f}s (router :{ports.router}; logs in {logs}/). "
                  f"{len(transactions):,} {args.scenario} transactions at {args.rate:g}/s, {args.batch} a request; "
                  f"policy {policy_file}",
                  flush=True)
            traffic = Traffic(f"http://127.0.0.1:{ports.router}/v1/models/{MODEL}:predict", transactions, args.rate,
                              args.batch, args.concurrency, token(data, "transformer-debug"), columns)
            monitor = Monitor(traffic, admin, f"http://127.0.0.1:{ports.drift}", state, repo, old,
                              transactions[0]["_t"])
            traffic.start()
            monitor.event("world", f"live traffic begins: scenario {args.scenario}, serving {old}")
            feed = start_label_feed(data, run_dir / "live.jsonl", ports, args.label_interval, logs / "label_feed.log")
            controller = start_controller(policy_file, state, repo, data, ports, logs / "controller.log",
                                          mode["trainer_env"])
            verdict_at, paced = None, False
            last_status = 0.0
            while True:
                time.sleep(1.0)
                monitor.poll()
                wall = time.monotonic() - monitor.started
                if wall - last_status >= args.status_every:
                    print(monitor.status_line(), flush=True)
                    last_status = wall
                run = monitor.policy.get("lastRun") or {}
                if not paced and monitor.policy.get("phase") in ("Training", "Gating", "RollingOut"):
                    traffic.pace(args.loop_rate, 1)
                    monitor.event("pace", f"a retraining runs: {args.loop_rate:g} transactions/s, one a request, "
                                          "until its verdict")
                    paced = True
                if paced and verdict_at is None and run.get("finishedAt"):
                    verdict_at = wall
                    traffic.pace(args.rate, args.batch)  # more labelled days to compare the versions on
                    monitor.event("pace", f"verdict {run.get('verdict')}: {args.rate:g} transactions/s again for "
                                          f"{args.settle:g} s")
                if verdict_at is not None and wall - verdict_at >= args.settle:
                    ended_by = f"the run's verdict ({run.get('verdict')})"
                    break
                if wall > args.duration:
                    break
                if not traffic.is_alive():
                    ended_by = traffic.ended or "the traffic"
                    break
                if controller.poll() is not None:
                    ended_by = f"controller exited {controller.returncode} (see {logs / 'controller.log'})"
                    break
            traffic.stop()
            for process in (feed, controller):
                stop(process)
            monitor.poll()
            events = event_counters(f"http://127.0.0.1:{ports.transformer}")
            new_versions = [v for v in monitor.new_versions if gates_of(repo, v).get("status") != "rejected"]
            if new_versions:
                comparison = compare(traffic, transactions, repo, old, new_versions[-1],
                                     f"http://127.0.0.1:{ports.predictor}")
    except KeyboardInterrupt:
        interrupted = True
    except StackError as e:
        return f"make flywheel failed: {e}"
    finally:
        if traffic is not None:
            traffic.stop()
        for process in (feed, controller):
            if process is not None and process.poll() is None:
                stop(process)

    if monitor is None:
        return 130 if interrupted else "make flywheel ended before traffic began"
    monitor.event("end", "interrupted" if interrupted else f"ended by {ended_by}")
    return finish(args, run_dir, state, monitor, comparison, old, interrupted, events)


def finish(args: argparse.Namespace, run_dir: Path, state: Path, monitor: Monitor, comparison: dict, old: str,
           interrupted: bool, events: dict[str, float]) -> int:
    """The timeline, the HTML page, the figures, and the exit status with its reason."""
    trained = [e for e in monitor.events if e["kind"] == "policy" and e["text"].startswith("TrainingStarted")]
    promoted = monitor.promoted_at
    sent, errors, _, counts = monitor.traffic.snapshot()
    if args.scenario == "none":
        ok = not trained
        why = ("no retraining over the run, as expected on unchanged traffic" if ok else
               f"unchanged traffic was retrained: {trained[0]['text']}")
    elif promoted is None:
        ok, why = False, "no new version reached 100% of traffic " + (
            f"(policy: {monitor.policy.get('phase')}: {monitor.policy.get('message')})" if monitor.policy else "")
    elif comparison.get("pr_auc_new") is None or comparison.get("pr_auc_old") is None:
        ok, why = False, f"{promoted['version']} serves 100% but could not be compared: {comparison.get('reason')}"
    else:
        ok = comparison["pr_auc_new"] > comparison["pr_auc_old"]
        why = (f"{promoted['version']} serves 100% and {'beats' if ok else 'does NOT beat'} {old} on the same "
               f"labelled window: PR-AUC {comparison['pr_auc_new']:.3f} vs {comparison['pr_auc_old']:.3f} "
               f"({comparison['rows']:,} rows, {comparison['frauds']} frauds)")
    if interrupted:
        ok, why = False, "interrupted: " + why
    summary = {
        "scenario": args.scenario, "outcome": ("PASS: " if ok else "FAIL: ") + why,
        "transactions": sent, "unanswered": errors, "answers_by_version": {v: c[0] for v, c in counts.items()},
        "rate": args.rate, "batch": args.batch, "loop_rate": args.loop_rate,
        "wall_s": round(monitor.now()[0], 1), "sim_days": round(monitor.now()[1], 2),
        "old_version": old, "new_versions": monitor.new_versions,
        "change_to_100pct_sim_days": promoted["sim_days"] if promoted else None,
        "change_to_100pct_wall_s": promoted["wall_s"] if promoted else None,
        "retrainings": usage_of(state), "comparison": comparison, "inference_events": events,
        "policy": (state / "policy.yaml").read_text(),
        "command": "make flywheel" + (f" LOOP_ARGS='--scenario {args.scenario}'" if args.scenario != "concept"
                                      else ""),
        "run_dir": str(run_dir),
    }
    page = run_dir / "timeline.html"
    page.write_text(render_html(summary, monitor.samples, monitor.events))
    (run_dir / "events.json").write_text(json.dumps({"summary": summary, "events": monitor.events,
                                                     "samples": monitor.samples}, indent=1))
    print("\nTimeline (simulated day since the change, wall seconds since traffic began):")
    print(timeline(monitor.events))
    for run in summary["retrainings"]:
        print(f"  training {run['run']}: {run['wall_s']}s wall, {run['cpu_s']}s CPU (exit {run['exit']})")
    if comparison:
        print(f"  same-window comparison: {json.dumps(comparison)}")
    if args.record:
        out = ROOT / "bench" / "results" / "flywheel.json"
        recorded = {k: v for k, v in summary.items() if k != "run_dir"}
        out.write_text(json.dumps({"recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   **recorded}, indent=1) + "\n")
        print(f"Figures: {out}")
    print(f"\nHTML timeline: {page}\n{'PASS' if ok else 'FAIL'}: {why}")
    return 130 if interrupted else (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
