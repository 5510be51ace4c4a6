"""Controller benchmarks on the real control plane: 100 concurrent canaries, and rollback time.

    tests/cluster/.venv/bin/python bench/controller/control_plane.py [--rollouts 100] [--rollback-runs 10]

The same set-up as tests/cluster/test_controller.py, as a benchmark: the local control plane from hack/cluster
(etcd, kube-apiserver, controller-manager, scheduler, kwok), the ModelRollout CRD, the chart's controller
ServiceAccount/Role/RoleBinding in a fresh namespace, the controller as a process authenticated with that
ServiceAccount's token, and a predictor serving tests/cluster/rollout_models.py's three versions (v1, v2 fast;
v3 ~15 ms slower) with the router in front, as local processes (scripts/localstack.py).

- **scale**: routes m000..m099 (stable v1) are put on the router's admin API, then N ModelRollouts (v1 -> v2,
  canary setWeight 10 / pause 2s / setWeight 30 / pause 2s / setWeight 60 / pause 2s, no metrics) are created at
  once. Measured: the controller's `flywheel_controller_reconcile_seconds` histogram (p50/p99/max as bucket
  bounds, plus Prometheus-style interpolation), time from the first create to the last Succeeded, how late each
  step fired against its pause (from status.decisions), and every route ending at stable v2 alone.
- **rollback**: with ~60 req/s flowing through the router to model fraud, K sequential rollouts v1 -> v3
  (canary setWeight 30, pause 60s; analysis every 2s, minSamples 10, router latency_p99_seconds relativeToStable
  max 0.005) that must end RolledBack. Rollback time = the router's route.updatedAt once it is back at v1 alone
  minus status.lastAnalysis.time (the failing verdict). Each rollout is deleted and the route reset between runs.

Each phase runs its own controller process (fresh /metrics) in its own namespace. Results go to the `scale` and
`rollback` keys of bench/results/controller.json (read-modify-write: other keys are kept); a markdown table for
docs/benchmarks.md is printed. Logs of every process stay in the work directory printed at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import controlplane  # noqa: E402
from benchkit import cpu_model, cpu_seconds, log  # noqa: E402
from chart_fixtures import MODELROLLOUT_CRD, Tools, crd_established  # noqa: E402
from controller_rig import RouterAdmin, Traffic, service_account_env, stable_only  # noqa: E402
from localstack import Ports, Service, Stack, free_port, router_service, venv_python  # noqa: E402

CONTROLLER_PYTHON = REPO / "services" / "controller" / ".venv" / "bin" / "python"
RESULTS = REPO / "bench" / "results" / "controller.json"
SA = "flywheel-controller"
GROUP, VERSION, PLURAL = "flywheel.dev", "v1alpha1", "modelrollouts"
TERMINAL = {"Succeeded", "RolledBack", "Aborted", "Failed"}

SCALE_STEPS = [
    {"setWeight": 10},
    {"pause": {"duration": "2s"}},
    {"setWeight": 30},
    {"pause": {"duration": "2s"}},
    {"setWeight": 60},
    {"pause": {"duration": "2s"}},
]
ROLLBACK_STEPS = [{"setWeight": 30}, {"pause": {"duration": "60s"}}, {"setWeight": 60}]
ROLLBACK_ANALYSIS = {
    "interval": "2s",
    "minSamples": 10,
    "metrics": [
        {
            "name": "latency",
            "provider": "router",
            "metric": "latency_p99_seconds",
            "relativeToStable": True,
            "max": 0.005,
        }
    ],
}
GOALS = {"reconcile_p99_s": 1.0, "rollback_s": 5.0}


# ---------------------------------------------------------------------------------------------- helpers


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def epoch(value: str) -> float:
    return parse_time(value).timestamp()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class LoadSampler:
    """/proc/loadavg every few seconds, and other control planes on the machine (tests/cluster running)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s, self.samples = every_s, []
        self.other_apiservers_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, own_apiserver_pid: int | None = None) -> None:
        self.own = own_apiserver_pid
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self.other_apiservers_seen = max(self.other_apiservers_seen, len(self.other_apiservers()))
            self._stop.wait(self.every_s)

    def other_apiservers(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.own:
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            if argv0.endswith(b"/kube-apiserver"):
                found.append(int(entry.name))
        return found

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=10)
        s = self.samples or [0.0]
        return {
            "loadavg_1m_mean": round(statistics.fmean(s), 2),
            "loadavg_1m_max": round(max(s), 2),
            "other_control_planes_running": self.other_apiservers_seen,
        }


# ---------------------------------------------------------------------------------------------- router


# ------------------------------------------------------------------------------------------ controller


class Controller:
    """The controller as a process in one namespace, as the chart's ServiceAccount, /metrics on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = int(env["FLYWHEEL_CONTROLLER_HTTP_PORT"])
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(CONTROLLER_PYTHON), "-m", "flywheel_controller"],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        wait_for("the controller's /readyz", lambda: self._get("/readyz") is not None, timeout=60)
        wait_for(
            "the controller to hold its Lease", lambda: self.metric("flywheel_controller_leader") == 1.0, timeout=60
        )

    def _get(self, path: str) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the controller exited ({self.process.returncode}):\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.read().decode()
        except (urllib.error.URLError, OSError):
            return None

    def scrape(self) -> str:
        text = self._get("/metrics")
        if text is None:
            raise RuntimeError("the controller's /metrics did not answer")
        return text

    def metric(self, name: str) -> float | None:
        text = self._get("/metrics") or ""
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None

    def cpu_s(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """WARNING/ERROR lines and tracebacks of the controller's log (empty when it ran cleanly)."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in text if re.search(r"WARNING|ERROR|Traceback|exception", line)]


def histogram(text: str, name: str) -> dict:
    """A Prometheus histogram from the text exposition: buckets (le -> cumulative count), count, sum."""
    buckets: list[tuple[float, float]] = []
    for le, value in re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.MULTILINE):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.MULTILINE).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.MULTILINE).group(1))
    return {"buckets": sorted(buckets), "count": count, "sum": total}


def quantile(hist: dict, q: float) -> dict:
    """The q-quantile of a histogram: the bucket bound it falls under (what can be said for sure) and
    Prometheus' histogram_quantile linear interpolation inside that bucket."""
    rank, previous_le, previous_count = q * hist["count"], 0.0, 0.0
    for le, count in hist["buckets"]:
        if count >= rank:
            if le == float("inf"):
                return {"le": "+Inf", "interpolated": previous_le}
            inside = (rank - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return {"le": le, "interpolated": round(previous_le + (le - previous_le) * inside, 4)}
        previous_le, previous_count = le, count
    return {"le": "+Inf", "interpolated": previous_le}


def apiserver_latency(before: str, after: str) -> dict[str, dict]:
    """Mean kube-apiserver latency (its own apiserver_request_duration_seconds, sum/count over the phase) per
    verb of the requests the controller makes: how much of a reconcile is the API server's."""
    pattern = r"^apiserver_request_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$"

    def read(text: str) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for kind, labels, value in re.findall(pattern, text, re.MULTILINE):
            lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if lab.get("resource") not in ("modelrollouts", "events", "leases"):
                continue
            key = (lab["resource"] + ("/" + lab["subresource"] if lab.get("subresource") else ""), lab["verb"])
            acc = out.setdefault(key, [0.0, 0.0])
            acc[0 if kind == "sum" else 1] += float(value)
        return out

    a, b = read(before), read(after)
    result = {}
    for key, (total, count) in sorted(b.items()):
        total -= a.get(key, [0.0, 0.0])[0]
        count -= a.get(key, [0.0, 0.0])[1]
        if count > 0:
            result[f"{key[1]} {key[0]}"] = {"requests": int(count), "mean_s": round(total / count, 4)}
    return result


def counters(text: str, name: str) -> dict[str, float]:
    return {labels: float(v) for labels, v in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE)}


# ----------------------------------------------------------------------------------------------- set-up


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cp: controlplane.ControlPlane | None = None
        self.stack: Stack | None = None
        self.controllers: list[Controller] = []
        self.controller_env: dict[str, str] = {}

    # -- cluster -----------------------------------------------------------------------------------------
    def start_cluster(self) -> None:
        log("starting the control plane (hack/cluster)")
        started = time.monotonic()
        self.cp = controlplane.ControlPlane.start()
        self.cluster_start_s = time.monotonic() - started
        home = self.work / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cp.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.tools = Tools(str(self.cp.bin_dir / "helm"), str(self.cp.bin_dir / "kubectl"), env)
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MODELROLLOUT_CRD))
        wait_for(
            "ModelRollout CRD Established",
            lambda: crd_established(client.ApiextensionsV1Api(self.api), "modelrollouts.flywheel.dev"),
            60,
        )
        log(f"control plane up in {self.cluster_start_s:.1f} s; kubeconfig {self.cp.kubeconfig}")

    def apiserver_metrics(self) -> str:
        return self.tools.kubectl("get", "--raw", "/metrics").stdout

    def namespace(self, name: str) -> str:
        from kubernetes import client

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait_for(
            f"ServiceAccount {name}/default",
            lambda: any(sa.metadata.name == "default" for sa in self.core.list_namespaced_service_account(name).items),
            60,
        )
        docs = self.tools.render(
            namespace=name,
            extra=(
                "--show-only",
                "templates/controller-serviceaccount.yaml",
                "--show-only",
                "templates/controller-role.yaml",
                "--show-only",
                "templates/controller-rolebinding.yaml",
            ),
        )
        self.tools.kubectl("apply", "-n", name, "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in docs))
        return name

    def controller(self, ns: str) -> Controller:
        """The controller for `ns`, authenticated with the chart's ServiceAccount token (least privilege)."""
        assert self.cp is not None and self.serving is not None
        directory = self.work / f"controller-{ns}"
        directory.mkdir()
        env = {
            **service_account_env(self.cp.kubeconfig, self.tools.kubectl, ns, SA, directory),
            "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL": self.serving["admin"],
            "FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE": str(self.serving["token"]),
            "FLYWHEEL_CONTROLLER_HTTP_HOST": "127.0.0.1",
            "FLYWHEEL_CONTROLLER_HTTP_PORT": str(free_port()),
            "FLYWHEEL_CONTROLLER_IDENTITY": f"bench-{ns}",
            **self.controller_env,
        }
        c = Controller(env, directory / "controller.log")
        self.controllers.append(c)
        c.start()
        return c

    # -- serving -----------------------------------------------------------------------------------------
    def start_serving(self) -> None:
        log("publishing v1, v2, v3 of fraud and starting predictor + router")
        repo, data = self.work / "model_repo", self.work / "data"
        subprocess.run(
            [venv_python("services/predictor"), str(REPO / "tests" / "cluster" / "rollout_models.py"), str(repo)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        ports = Ports(predictor=free_port(), router=free_port(), router_admin=free_port())
        predictor = Service(
            "predictor",
            [venv_python("services/predictor"), "-m", "flywheel_predictor"],
            {
                "FLYWHEEL_PREDICTOR_MODEL_REPO": str(repo),
                "FLYWHEEL_PREDICTOR_HTTP_PORT": str(ports.predictor),
                "FLYWHEEL_DATA_DIR": str(data),
            },
            f"http://127.0.0.1:{ports.predictor}/v2/health/ready",
        )
        router = router_service(data, ports, f"http://127.0.0.1:{ports.predictor}")
        self.stack = Stack([predictor, router], self.work / "logs")
        self.stack.__enter__()
        token = data / "router" / "token"
        self.serving = {
            "ports": ports,
            "token": token,
            "admin": f"http://127.0.0.1:{ports.router_admin}",
            "infer": f"http://127.0.0.1:{ports.router}/v2/models/fraud/infer",
        }
        self.router = RouterAdmin(self.serving["admin"], token)
        self.router.put_route("fraud", {"stable": {"version": "v1"}})

    def close(self) -> None:
        for c in self.controllers:
            c.stop()
        if self.stack is not None:
            self.stack.stop()
        if self.cp is not None:
            self.cp.stop()

    # -- objects -----------------------------------------------------------------------------------------
    def create(self, ns: str, doc: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)

    def list(self, ns: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]

    def get(self, ns: str, name: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete(self, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def rollout(
    name: str, model: str, stable: str, candidate: str, steps: list[dict], analysis: dict | None = None
) -> dict:
    spec: dict = {
        "model": model,
        "stable": {"version": stable},
        "candidate": {"version": candidate},
        "strategy": {"type": "Canary", "canary": {"steps": steps}},
    }
    if analysis is not None:
        spec["analysis"] = analysis
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": {"name": name}, "spec": spec}


# ------------------------------------------------------------------------------------------------ scale


def step_lags(obj: dict, created_at: float) -> dict[str, float] | None:
    """How late each move fired, from status.decisions: a setWeight should fire at once after the move before
    it, a pause's end `duration` after the setWeight that started it; 'start' from the create call."""
    decisions = (obj.get("status") or {}).get("decisions") or []
    if not decisions or decisions[0]["action"] != "Start":
        return None
    lags = {"start": epoch(decisions[0]["time"]) - created_at}
    previous = epoch(decisions[0]["time"])
    for d in decisions[1:]:
        t = epoch(d["time"])
        if d["action"] == "SetWeight":
            lags[f"{d['step'] + 1} setWeight {SCALE_STEPS[d['step']]['setWeight']}"] = t - previous
        elif d["action"] == "PauseEnded":
            lags[f"{d['step'] + 1} pause 2s"] = t - previous - 2.0
        elif d["action"] == "Succeed":
            lags["promote"] = t - previous
        else:
            lags[f"unexpected {d['action']}"] = t - previous
        previous = t
    return lags


def run_scale(bench: Bench, n: int) -> dict:
    ns = bench.namespace("bench-scale")
    models = [f"m{i:03d}" for i in range(n)]
    log(f"scale: putting {n} routes (stable v1)")
    for model in models:
        bench.router.put_route(model, {"stable": {"version": "v1"}})
    controller = bench.controller(ns)
    cpu_before = controller.cpu_s()
    api_before = bench.apiserver_metrics()
    docs = [rollout(f"{m}-v2", m, "v1", "v2", SCALE_STEPS) for m in models]
    created: dict[str, float] = {}

    def create(doc: dict) -> None:
        t = time.time()
        bench.create(ns, doc)
        created[doc["metadata"]["name"]] = t

    log(f"scale: creating {n} ModelRollouts at once (16 threads)")
    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, docs))
    t_applied = time.time()
    log(f"scale: created in {t_applied - t0:.2f} s; waiting for every rollout to end")

    def all_ended() -> list[dict] | None:
        items = bench.list(ns)
        done = [o for o in items if (o.get("status") or {}).get("phase") in TERMINAL]
        return items if len(items) == n and len(done) == n else None

    items = wait_for(f"all {n} rollouts ended", all_ended, timeout=600, every=0.5)
    t_seen = time.time()
    text = controller.scrape()  # at once: terminal rollouts are still looked at every 5 s afterwards
    cpu_used = controller.cpu_s() - cpu_before
    api_latency = apiserver_latency(api_before, bench.apiserver_metrics())
    phases: dict[str, int] = {}
    for o in items:
        phases[o["status"]["phase"]] = phases.get(o["status"]["phase"], 0) + 1
    finished = [epoch(o["status"]["finishedAt"]) for o in items if o["status"].get("finishedAt")]
    durations = [
        epoch(o["status"]["finishedAt"]) - epoch(o["status"]["startedAt"])
        for o in items
        if o["status"].get("finishedAt") and o["status"].get("startedAt")
    ]

    # Routes: every model at stable v2 alone (the router's GET follows a write within its 0.25 s poll).
    def routes_final() -> dict[str, dict]:
        return {m: bench.router.route(m) for m in models}

    try:
        routes = wait_for(
            "every route at stable v2 alone",
            lambda: (lambda rs: rs if all(stable_only("v2")(r) for r in rs.values()) else None)(routes_final()),
            timeout=15,
            every=0.5,
        )
    except TimeoutError:
        routes = routes_final()
    wrong_routes = sorted(m for m, r in routes.items() if not stable_only("v2")(r))
    route_lag = []  # route.updatedAt of the final route minus the Succeed decision's time
    by_model = {o["spec"]["model"]: o for o in items}
    for m, r in routes.items():
        o = by_model.get(m)
        if r and r.get("updatedAt") and o and o["status"].get("finishedAt") and stable_only("v2")(r):
            route_lag.append(epoch(r["updatedAt"]) - epoch(o["status"]["finishedAt"]))

    lags = {o["metadata"]["name"]: step_lags(o, created[o["metadata"]["name"]]) for o in items}
    bad_decisions = sorted(
        name for name, lag in lags.items() if lag is None or any(k.startswith("unexpected") for k in lag)
    )
    by_step: dict[str, list[float]] = {}
    for lag in lags.values():
        for step, value in (lag or {}).items():
            by_step.setdefault(step, []).append(value)
    slowest = max(items, key=lambda o: epoch(o["status"].get("finishedAt") or o["metadata"]["creationTimestamp"]))
    hist = histogram(text, "flywheel_controller_reconcile_seconds")
    result = {
        "rollouts": n,
        "steps": SCALE_STEPS,
        "controller_env": bench.controller_env,
        "max_concurrent": int(bench.controller_env.get("FLYWHEEL_CONTROLLER_MAX_CONCURRENT", "16")),
        "create_window_s": r3(t_applied - t0),
        "apply_to_all_succeeded_s": r3(max(finished) - t0) if finished else None,
        "apply_to_all_seen_ended_s": r3(t_seen - t0),
        "ideal_rollout_s": 6.0,
        "rollout_duration_s": {"p50": r3(pct(durations, 50)), "max": r3(max(durations))} if durations else None,
        "phases": phases,
        "routes_not_at_stable_v2": wrong_routes,
        "rollouts_with_unexpected_decisions": bad_decisions,
        "final_route_written_after_decision_s": {
            "p50": r3(pct(route_lag, 50)),
            "p99": r3(pct(route_lag, 99)),
            "max": r3(max(route_lag)),
        }
        if route_lag
        else None,
        "step_lag_s": {
            step: {"p50": r3(pct(v, 50)), "p99": r3(pct(v, 99)), "max": r3(max(v))} for step, v in by_step.items()
        },
        "slowest_rollout": {
            "name": slowest["metadata"]["name"],
            "lag_s": {k: r3(v) for k, v in (lags[slowest["metadata"]["name"]] or {}).items()},
        },
        "reconcile_seconds": {
            "count": int(hist["count"]),
            "mean": r3(hist["sum"] / hist["count"]) if hist["count"] else None,
            "p50": quantile(hist, 0.50),
            "p99": quantile(hist, 0.99),
            "max": quantile(hist, 1.0),
            "buckets": {("+Inf" if le == float("inf") else str(le)): int(c) for le, c in hist["buckets"]},
        },
        "controller_errors_total": counters(text, "flywheel_controller_errors_total"),
        "controller_cpu_s": r3(cpu_used),
        "controller_cpu_ms_per_reconcile": round(cpu_used / hist["count"] * 1000, 1) if hist["count"] else None,
        "apiserver_latency": api_latency,
        "controller_log_problems": controller.log_problems()[:20],
    }
    controller.stop()
    return result


# --------------------------------------------------------------------------------------------- rollback


def run_rollback(bench: Bench, runs: int) -> dict:
    ns = bench.namespace("bench-rollback")
    bench.router.put_route("fraud", {"stable": {"version": "v1"}})
    traffic = Traffic(bench.serving["infer"])
    traffic.start()
    try:
        time.sleep(3.0)  # the predictor's first requests to each version warm it
        controller = bench.controller(ns)
        results = []
        for i in range(runs):
            name = f"fraud-v3-{i:02d}"
            t0 = time.time()
            bench.create(ns, rollout(name, "fraud", "v1", "v3", ROLLBACK_STEPS, ROLLBACK_ANALYSIS))
            obj = wait_for(
                f"{name} ended",
                lambda name=name: (lambda o: o if o and (o.get("status") or {}).get("phase") in TERMINAL else None)(
                    bench.get(ns, name)
                ),
                timeout=150,
                every=0.2,
            )
            status = obj["status"]
            run: dict[str, Any] = {"name": name, "phase": status["phase"]}
            if status["phase"] == "RolledBack":
                failing = status["lastAnalysis"]
                try:
                    route = wait_for(
                        "the route back at v1 alone",
                        lambda: (lambda r: r if stable_only("v1")(r) else None)(bench.router.route("fraud")),
                        timeout=30,
                        every=0.1,
                    )
                except TimeoutError:
                    route = bench.router.route("fraud")
                    run["route_not_back"] = route
                latency = next((m for m in failing["metrics"] if m["name"] == "latency"), {})
                analyses = [d for d in status.get("decisions") or []]
                run.update(
                    {
                        "verdict": failing["verdict"],
                        "decisive": failing.get("decisive"),
                        "candidate_p99_s": latency.get("value"),
                        "stable_p99_s": latency.get("stableValue"),
                        "p_value": latency.get("pValue"),
                        "samples": latency.get("samples"),
                        "rollback_s": r3(epoch(route["updatedAt"]) - epoch(failing["time"]))
                        if stable_only("v1")(route)
                        else None,
                        "verdict_after_start_s": r3(epoch(failing["time"]) - epoch(status["startedAt"])),
                        "create_to_rolled_back_s": r3(epoch(status["finishedAt"]) - t0),
                        "rolled_back_decision_after_verdict_s": r3(
                            epoch(status["finishedAt"]) - epoch(failing["time"])
                        ),
                        "decisions": [d["action"] for d in analyses],
                    }
                )
            else:
                run["message"] = status.get("message")
            results.append(run)
            log(
                f"rollback {i + 1}/{runs}: {run['phase']} rollback_s={run.get('rollback_s')} "
                f"verdict after {run.get('verdict_after_start_s')} s"
            )
            bench.delete(ns, name)
            wait_for(f"{name} deleted", lambda name=name: bench.get(ns, name) is None, timeout=60, every=0.2)
            bench.router.put_route("fraud", {"stable": {"version": "v1"}})
            time.sleep(1.0)  # the reset route is loaded before the next rollout reads its stable
        text = controller.scrape()
        hist = histogram(text, "flywheel_controller_reconcile_seconds")
        problems = controller.log_problems()
        controller.stop()
    finally:
        traffic.stop()
    times = [r["rollback_s"] for r in results if r.get("rollback_s") is not None]
    detect = [r["verdict_after_start_s"] for r in results if r.get("verdict_after_start_s") is not None]
    return {
        "runs": runs,
        "steps": ROLLBACK_STEPS,
        "analysis": ROLLBACK_ANALYSIS,
        "traffic": {"threads": traffic.threads, "answered": traffic.ok, "failed": traffic.failed},
        "rolled_back": sum(r["phase"] == "RolledBack" for r in results),
        "rollback_s": {"min": r3(min(times)), "median": r3(statistics.median(times)), "max": r3(max(times))}
        if times
        else None,
        "verdict_after_start_s": {
            "min": r3(min(detect)),
            "median": r3(statistics.median(detect)),
            "max": r3(max(detect)),
        }
        if detect
        else None,
        "reconcile_seconds": {
            "count": int(hist["count"]),
            "p50": quantile(hist, 0.5),
            "p99": quantile(hist, 0.99),
            "max": quantile(hist, 1.0),
        },
        "controller_errors_total": counters(text, "flywheel_controller_errors_total"),
        "controller_log_problems": problems[:20],
        "per_run": results,
    }


# ------------------------------------------------------------------------------------------------ output


def machine(load: dict) -> dict:
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(), **load}


def fmt_q(q: dict) -> str:
    le = q["le"]
    return f"<= {le:g} s (~{q['interpolated']:.3f})" if isinstance(le, float) else f"> {q['interpolated']:g} s"


def table(scale: dict | None, rollback: dict | None) -> str:
    rows = ["| benchmark | figure | goal | result |", "| --- | --- | --- | --- |"]
    if scale:
        rc = scale["reconcile_seconds"]
        rows += [
            f"| {scale['rollouts']} concurrent canaries | reconcile p50 (bucket bound) | | {fmt_q(rc['p50'])} |",
            f"| | reconcile p99 (bucket bound) | <= 1 s | {fmt_q(rc['p99'])} |",
            f"| | reconcile max (bucket bound) | | {fmt_q(rc['max'])} |",
            f"| | apply -> all Succeeded (6 s of pauses each) | | {scale['apply_to_all_succeeded_s']:.1f} s |",
            f"| | rollout duration p50 / max | 6 s | {scale['rollout_duration_s']['p50']:.1f} / "
            f"{scale['rollout_duration_s']['max']:.1f} s |",
            "| | worst step lag (pause end or setWeight late) | | "
            f"{max(v['max'] for k, v in scale['step_lag_s'].items() if k != 'start'):.2f} s |",
            f"| | ended Succeeded, route at stable v2 | all | "
            f"{scale['phases'].get('Succeeded', 0)}/{scale['rollouts']}, "
            f"{scale['rollouts'] - len(scale['routes_not_at_stable_v2'])}/{scale['rollouts']} |",
        ]
    if rollback and rollback["rollback_s"]:
        rb = rollback["rollback_s"]
        rows += [
            f"| rollback of a slow candidate (x{rollback['runs']}) | failing verdict -> route back on stable, "
            f"min / median / max | <= 5 s | {rb['min']:.2f} / {rb['median']:.2f} / {rb['max']:.2f} s |",
            f"| | rolled back | all | {rollback['rolled_back']}/{rollback['runs']} |",
            f"| | verdict after start, median | | {rollback['verdict_after_start_s']['median']:.1f} s |",
        ]
    return "\n".join(rows)


def write_results(updates: dict) -> None:
    """Read-modify-write right before writing: the `decisions` key belongs to bench/controller/decisions.py,
    which may rewrite the file while this runs."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(updates)
    tmp = RESULTS.with_name(f".{RESULTS.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=100, help="concurrent canaries in the scale run")
    parser.add_argument("--rollback-runs", type=int, default=10, help="sequential rollbacks")
    parser.add_argument("--only", choices=("scale", "rollback"), help="run one benchmark")
    parser.add_argument(
        "--controller-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the controller (e.g. FLYWHEEL_CONTROLLER_MAX_CONCURRENT=32)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args(argv)
    command = "tests/cluster/.venv/bin/python bench/controller/control_plane.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-controller-"))
    log(f"work directory (logs): {work}")
    bench = Bench(work)
    bench.controller_env = dict(kv.split("=", 1) for kv in args.controller_env)
    out: dict = {}
    try:
        bench.start_cluster()
        bench.start_serving()
        for name, fn, size in (("scale", run_scale, args.rollouts), ("rollback", run_rollback, args.rollback_runs)):
            if args.only not in (None, name):
                continue
            sampler = LoadSampler()
            sampler.start(bench.cp.procs["kube-apiserver"].pid)
            started = time.monotonic()
            result = fn(bench, size)
            out[name] = {
                "command": command,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(sampler.stop()),
                "seconds": round(time.monotonic() - started, 1),
                "setup": "local control plane (hack/cluster, kube " + controlplane_version() + "), "
                "controller as the chart's ServiceAccount, predictor + router as local processes",
                **result,
            }
            log(json.dumps({k: v for k, v in out[name].items() if k not in ("per_run",)}, indent=1))
    finally:
        bench.close()
    if out and not args.no_write:
        write_results(out)
        log(f"wrote {', '.join(out)} to {RESULTS.relative_to(REPO)}")
    print(table(out.get("scale"), out.get("rollback")))
    return 0


def controlplane_version() -> str:
    text = (REPO / "hack" / "cluster" / "versions.env").read_text()
    match = re.search(r"^KUBERNETES_VERSION=\"?v?([\d.]+)", text, re.MULTILINE)
    return match.group(1) if match else "?"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop every process started
    sys.exit(main())
