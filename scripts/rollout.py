"""`make rollout`: publish a candidate version and roll it out with a short canary on the local stack, no cluster.

The Makefile has installed every project and trained v1. This script:
1. publishes a candidate: `good` is trained exactly as `make retrain` trains; `harmful` is trained with a
   validation split so small (FLYWHEEL_TRAINER_VALIDATION_FRACTION=0.001: a few dozen rows, usually without a
   single fraud) that Platt calibration has nothing to fit on, so the version serves the raw scores of the
   class-weighted network and declines many times as many transactions as v1 (measured on the default data:
   about 15% of live traffic against v1's 0.5%) -- a real mistake a router can see, not a fake server. The
   trainer would not serve that network on its own (it loses to the logistic-regression baseline on
   validation, or ties with it on a split without fraud), so `harmful` also forces it
   (FLYWHEEL_TRAINER_SERVE=torch), as a person overriding the trainer's choice would;
2. starts its own stack on free loopback ports (so a running `make up` is never in the way), sharing
   `<data>/router/routes.json` with `make up`: the route the rollout leaves is the one the next `make up` serves
   (and a `make up` running now follows it too, as a second router replica would);
3. makes sure the route has a stable version (on a first run: the newest version before the candidate);
4. writes a ModelRollout (a canary: 20%, 20 s, 50%, 20 s, judged every 5 s on the router's error rate, p99
   latency and decline rate relative to the stable) to `<data>/rollouts/`;
5. sends simulated live traffic through the router for the whole run, and runs the controller's local mode
   (`python -m flywheel_controller --local`, with `--model-repo`: a candidate published as rejected by its gates,
   as the trainer does with FLYWHEEL_TRAINER_STABLE_VERSION set, is refused before any traffic) on it, printing
   its decisions as they happen;
6. says how it ended. The exit status is the controller's: 0 Succeeded, 1 RolledBack/Aborted/Failed, 2 refused.

Standard library only, like scripts/up.py: it runs on the bare interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localstack import ROOT, Ports, Stack, StackError, default_services, free_port, post_json, router_token, venv_python  # noqa: E402

MODEL = "fraud"
RAW_FIELDS = (  # the stdlib twin of flywheel_core.schema.RAW_TRANSACTION_FIELDS (see scripts/up.py)
    "transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category", "channel",
    "event_timestamp",
)
PRE_PUBLISH = f"{ROOT}/services/drift/.venv/bin/python -m flywheel_drift precompute --version-dir"
"""The Makefile's FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND: each version ships with its drift detector state."""
TERMINAL = ("Succeeded", "RolledBack", "Aborted", "Failed")
EXIT_GRACE_S = 15.0
REJECTED_EXIT = 6
"""The trainer's exit status for a version it published as rejected by its gates (CandidateRejected)."""
HARMFUL_ENV = {"FLYWHEEL_TRAINER_VALIDATION_FRACTION": "0.001", "FLYWHEEL_TRAINER_SERVE": "torch"}
"""A validation split of ~0.1% of the rows: too few (and usually no fraud) to calibrate on, and the torch model
served whatever the selection says, see the docstring."""

ROLLOUT_TEMPLATE = """\
# Written by scripts/rollout.py (make rollout): a short canary of {model} {candidate} against {stable} on the
# local stack, judged every {interval} by the router's own counters. Run it again with:
#   FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL=... services/controller/.venv/bin/python -m flywheel_controller \\
#     --local {path} --state-dir {state_dir} --model-repo {model_repo}
apiVersion: flywheel.dev/v1alpha1
kind: ModelRollout
metadata:
  name: {name}
spec:
  model: {model}
  stable: {{version: {stable}}}
  candidate: {{version: {candidate}}}
  strategy:
    type: Canary
    canary:
      steps:
        - setWeight: 20
        - pause: {{duration: {pause}}}
        - setWeight: 50
        - pause: {{duration: {pause}}}
  analysis:
    interval: {interval}
    minSamples: {min_samples}
    failureLimit: 2
    metrics:
      - {{name: errors, provider: router, metric: error_rate, max: 0.02}}
      # Either way is harm: a version that declines more turns good customers away, one that declines less
      # lets fraud through.
      - {{name: declines, provider: router, metric: decline_rate, relativeToStable: true, max: 0.02, min: -0.02}}
      - {{name: latency, provider: router, metric: latency_p99_seconds, max: 0.25}}
  rollback: {{automatic: true}}
"""


def versions(model_repo: Path) -> list[str]:
    """Published versions, oldest first (a version is published once its metadata.json is in place)."""
    found = [p.name for p in (model_repo / MODEL).glob("v*")
             if p.name[1:].isdigit() and (p / "metadata.json").is_file()]
    return sorted(found, key=lambda v: int(v[1:]))


def publish_candidate(kind: str, model_repo: Path, data_dir: Path) -> tuple[str, bool]:
    """Train and publish the next version (the Makefile's TRAIN command, plus HARMFUL_ENV for `harmful`); the
    version, and whether its gates rejected it (published all the same: the controller is what refuses it)."""
    before = set(versions(model_repo))
    env = {
        **os.environ,
        "FLYWHEEL_DATA_DIR": str(data_dir),
        "FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND": PRE_PUBLISH,
        **(HARMFUL_ENV if kind == "harmful" else {}),
    }
    how = " with " + " ".join(f"{k}={v}" for k, v in HARMFUL_ENV.items()) if kind == "harmful" else ""
    print(f"Training a {kind} candidate{how} (about a minute) ...", flush=True)
    result = subprocess.run(
        [venv_python("services/trainer"), "-m", "flywheel_trainer", "train", "--feature-repo", "feature_repo",
         "--data", str(data_dir), "--model-repo", str(model_repo), "--model", MODEL],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    rejected = result.returncode == REJECTED_EXIT
    if result.returncode != 0 and not rejected:
        raise SystemExit(f"training the candidate failed ({result.returncode}):\n{result.stderr[-3000:]}")
    new = [v for v in versions(model_repo) if v not in before]
    if len(new) != 1:
        raise SystemExit(f"expected training to publish one new version, found {new or 'none'} in {model_repo / MODEL}")
    if rejected:
        print(f"Published {new[0]} as rejected by its gates; the controller must refuse it:\n"
              f"{(result.stderr.strip().splitlines() or ['(the trainer said nothing)'])[-1]}", flush=True)
        return new[0], True
    calibration = re.search(r"calibration: .*", result.stderr)
    print(f"Published {new[0]}" + (f" ({calibration.group(0)})" if calibration else ""), flush=True)
    return new[0], False


class Admin:
    """The router's admin API (bearer token), for the route before and after the rollout."""

    def __init__(self, port: int, token_file: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/routes/{MODEL}"
        self.headers = {"authorization": f"Bearer {token_file.read_text().strip()}"}

    def route(self) -> dict | None:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url, headers=self.headers), timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def ensure_stable(self, default: str) -> str:
        """The route's stable version; a route that sends everything to `default` when the model has none."""
        route = self.route()
        if route is not None:
            return route["stable"]["version"]
        body = json.dumps({"stable": {"version": default}, "generation": 0}).encode()
        request = urllib.request.Request(
            self.url, data=body, method="PUT", headers={**self.headers, "content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["stable"]["version"]


class Traffic(threading.Thread):
    """Simulated live transactions through the router at a steady rate until stopped; counts the answers."""

    def __init__(self, url: str, transactions: list[dict], rps: float, concurrency: int) -> None:
        super().__init__(name="traffic", daemon=True)
        self.url, self.transactions, self.rps, self.concurrency = url, transactions, rps, concurrency
        self.stopping = threading.Event()
        self.sent = self.errors = 0
        self.error_statuses: dict[int, int] = {}
        """Answers other than 200 by status (0: no answer: refused, timed out, unreadable)."""
        self.versions: dict[str, int] = {}
        self.lock = threading.Lock()

    def one(self, transaction: dict) -> None:
        try:
            status, body = post_json(self.url, {"instances": [{k: transaction[k] for k in RAW_FIELDS}]}, timeout_s=5)
            version = body["predictions"][0]["model_version"] if status == 200 else None
        except (OSError, ValueError, KeyError):
            status, version = 0, None
        with self.lock:
            self.sent += 1
            self.errors += status != 200
            if status != 200:
                self.error_statuses[status] = self.error_statuses.get(status, 0) + 1
            if version:
                self.versions[version] = self.versions.get(version, 0) + 1

    def run(self) -> None:
        with ThreadPoolExecutor(self.concurrency) as pool:
            started, i = time.monotonic(), 0
            while not self.stopping.is_set():
                # Paced by the clock, not by the answers: a slow candidate must not slow the traffic that judges it.
                delay = started + i / self.rps - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    break
                pool.submit(self.one, self.transactions[i % len(self.transactions)])
                i += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def warm(url: str, version: str, transactions: list[dict], n: int = 20) -> None:
    """Pinned requests to `version` before it takes traffic, so loading it is not counted as its latency."""
    for transaction in transactions[:n]:
        post_json(url, {"instances": [{k: transaction[k] for k in RAW_FIELDS}]}, timeout_s=30,
                  headers={"x-flywheel-model-version": version})


def live_transactions(n: int, data_dir: Path, out: Path) -> list[dict]:
    subprocess.run(
        [venv_python("services/features"), "-m", "flywheel_core.sim", "live", "--scenario", "none", "--n", str(n),
         "--data", str(data_dir), "--out", str(out)],
        check=True, cwd=ROOT,
    )
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def run_controller(rollout_file: Path, state_dir: Path, state_file: Path, ports: Ports, token: Path,
                   log_path: Path, model_repo: Path) -> int:
    """The controller's local mode; its decisions to our stdout as they come, its log to `log_path`.

    Its exit status, normally. A controller still running EXIT_GRACE_S after its status file says the rollout
    ended is stopped, and the status gives the answer (0 Succeeded, else 1), with a warning: `make rollout`
    must not hang on a controller that fails to exit.
    """
    env = {
        **os.environ,
        "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": f"http://127.0.0.1:{ports.router_admin}",
        "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(token),
        "FLYWHEEL_CONTROLLER_DRIFT_URL": f"http://127.0.0.1:{ports.drift}",
        "FLYWHEEL_CONTROLLER_HTTP_PORT": "0",
    }
    argv = [venv_python("services/controller"), "-m", "flywheel_controller", "--local", str(rollout_file),
            "--state-dir", str(state_dir), "--model-repo", str(model_repo)]
    with open(log_path, "w") as log:
        controller = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)

    def echo() -> None:
        for line in controller.stdout:
            print(f"  | {line}", end="", flush=True)

    threading.Thread(target=echo, name="controller-output", daemon=True).start()
    ended_at = None
    try:
        while True:
            try:
                return controller.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            phase = phase_of(state_file)
            if phase in TERMINAL and ended_at is None:
                ended_at = time.monotonic()
            if ended_at is not None and time.monotonic() - ended_at > EXIT_GRACE_S:
                print(f"warning: the controller did not exit within {EXIT_GRACE_S:.0f} s of the rollout ending "
                      f"{phase}; stopping it (see {log_path})", file=sys.stderr, flush=True)
                stop(controller)
                return 0 if phase == "Succeeded" else 1
    except KeyboardInterrupt:
        stop(controller)  # it saves its status as it goes; a later run resumes
        raise


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def phase_of(state_file: Path) -> str | None:
    try:
        return json.loads(state_file.read_text()).get("status", {}).get("phase")
    except (OSError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", choices=["good", "harmful"], default="good", help="the version to publish")
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--rps", type=float, default=60.0,
                        help="simulated requests per second (60: at 20%% the candidate gets 60 per 5 s interval)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    args = parser.parse_args()
    model_repo, data_dir = args.model_repo.resolve(), args.data.resolve()

    existing = versions(model_repo)
    if not existing:
        return f"{model_repo / MODEL} has no published version: run `make train` first"
    candidate, rejected = publish_candidate(args.candidate, model_repo, data_dir)

    rollouts = data_dir / "rollouts"
    log_dir = rollouts / "logs"
    ports = Ports(features=free_port(), predictor=free_port(), transformer=free_port(), drift=free_port(),
                  router=free_port(), router_admin=free_port())
    services = default_services(model_repo, data_dir, ports)
    # Its own drift spool: a `make up` running at the same time has the default one.
    services[0].env["FLYWHEEL_DRIFT_SPOOL_DIR"] = str(rollouts / "drift")
    log_dir.mkdir(parents=True, exist_ok=True)
    token = router_token(data_dir)
    traffic = None
    try:
        with Stack(services, log_dir=log_dir):
            print(f"Local stack ready (router on :{ports.router}, admin :{ports.router_admin}; logs in {log_dir}/)")
            admin = Admin(ports.router_admin, token)
            stable = admin.ensure_stable(existing[-1])
            route = admin.route() or {}
            if route.get("candidate"):
                print(f"note: the route also sends {route.get('candidateWeight', 0)}% to "
                      f"{route['candidate']['version']}; the rollout takes the route over", flush=True)

            name = f"{MODEL}-{candidate}-canary"
            rollout_file = rollouts / f"{name}.yaml"
            state_file = rollouts / f"default_{name}.status.json"  # the controller's: <namespace>_<name>
            rollout_file.write_text(ROLLOUT_TEMPLATE.format(
                model=MODEL, name=name, stable=stable, candidate=candidate, pause="20s", interval="5s", min_samples=40,
                path=rollout_file.relative_to(ROOT) if rollout_file.is_relative_to(ROOT) else rollout_file,
                state_dir=rollouts, model_repo=model_repo,
            ))
            transactions = live_transactions(5000, data_dir, rollouts / "live.jsonl")
            url = f"http://127.0.0.1:{ports.router}/v1/models/{MODEL}:predict"
            if not rejected:  # a rejected version gets no request at all, not even a pinned one
                warm(url, candidate, transactions)
            traffic = Traffic(url, transactions, args.rps, args.concurrency)
            traffic.start()
            print(f"Rolling out {candidate} against {stable} ({rollout_file}), {args.rps:g} simulated req/s:",
                  flush=True)
            code = run_controller(rollout_file, rollouts, state_file, ports, token, log_dir / "controller.log",
                                  model_repo)
            traffic.stop()
            final = admin.route() or {}
    except KeyboardInterrupt:
        print(f"\nInterrupted; the rollout's status is kept in {rollouts}/ and a new run of the controller on "
              "its YAML resumes it.", file=sys.stderr)
        return 130
    except StackError as e:
        return f"make rollout failed: {e}"
    finally:
        if traffic is not None:
            traffic.stop()

    status = json.loads(state_file.read_text()).get("status", {}) if state_file.is_file() else {}
    weight = final.get("candidateWeight", 0)
    split = f", {weight:g}% still to {final['candidate']['version']}" if final.get("candidate") and weight else ""
    served = ", ".join(f"{v} {n}" for v, n in sorted(traffic.versions.items())) if traffic else "-"
    print(
        f"\n{name}: {status.get('phase', 'no status')} ({status.get('message') or 'controller exit ' + str(code)}). "
        f"The router's route for {MODEL} now has stable {final.get('stable', {}).get('version', '?')}{split}; "
        f"the next `make up` serves it. Traffic: {traffic.sent} requests, {traffic.errors} errors (answered by "
        f"{served}). Rollout spec {rollout_file}, status {state_file}, controller log {log_dir / 'controller.log'}, "
        f"service logs in {log_dir}/. Controller exit status {code}."
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
