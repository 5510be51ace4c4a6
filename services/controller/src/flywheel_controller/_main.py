"""Wiring: settings -> store, traffic router, metric providers, elector -> the reconciler (+ health server).

Two ways to run the same engine:
- in a cluster (`python -m flywheel_controller`): ModelRollouts from the API server, leader election on a Lease,
  router statistics from every replica behind the router's Service;
- locally (`python -m flywheel_controller --local rollout.yaml ...`): ModelRollouts from YAML files, status in a
  state directory, one router at ROUTER_ADMIN_URL; exits when every rollout has ended (unless --keep-running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from flywheel_contracts import ModelRollout
from flywheel_contracts.tls import TLS

from ._config import ConfigError, Settings
from ._discovery import router_replicas
from ._gates_repo import make_gate_source
from ._health import HealthApp
from ._kube import KubeClient
from ._leader import AlwaysLeader, LeaseElector
from ._metrics import Metrics
from ._providers import make_providers
from ._reconciler import Reconciler
from ._retrain_kube import KubeJobRuns, KubePolicyStore, KubeRollouts
from ._retrain_local import FilePolicyStore, LocalRollouts, SubprocessRuns
from ._retrain_sources import DriftReports, RouterServing
from ._retrainer import Retrainer
from ._store_file import FileRolloutStore
from ._store_kube import KubeRolloutStore
from ._traffic import RouterAdminTraffic

PLAIN = TLS()
"""No TLS settings: plain HTTP served, https peers checked with the system's trust store (tests, local runs)."""

log = logging.getLogger("flywheel.controller")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled once, in run_until_signal


def _kube_client(settings: Settings) -> KubeClient:
    if settings.kubeconfig is not None:
        return KubeClient.from_kubeconfig(settings.kubeconfig)
    if settings.kube_api_url is not None:
        return KubeClient(settings.kube_api_url, settings.kube_token_file, settings.kube_ca_file)
    return KubeClient.in_cluster()


def _namespace(settings: Settings) -> str:
    if settings.namespace:
        return settings.namespace
    ns_file = settings.kube_token_file.parent / "namespace"
    try:
        return ns_file.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"Config 'FLYWHEEL_CONTROLLER_NAMESPACE' is unset and {ns_file} cannot be read ({e.strerror}): expected "
            "the namespace whose ModelRollouts to reconcile"
        ) from e


def _static_replicas(url: str):
    async def replicas() -> list[tuple[str, str]]:
        return [("router", url)]

    return replicas


def build_cluster(settings: Settings, metrics: Metrics,
                  tls: TLS = PLAIN) -> tuple[Reconciler, LeaseElector | AlwaysLeader, KubeClient]:
    client = _kube_client(settings)
    namespace = _namespace(settings)
    store = KubeRolloutStore(client, namespace)
    verify = tls.client_context()  # made once: every https peer (router, drift, Prometheus) checked with the CA
    admin = urlsplit(settings.router_admin_url)
    if settings.router_service:
        service, port = settings.router_service, settings.router_admin_port

        async def replicas() -> list[tuple[str, str]]:
            return await router_replicas(client, namespace, service, "admin", port, scheme=admin.scheme)
    else:
        replicas = _static_replicas(settings.router_admin_url)
    providers = make_providers(
        router_replicas=replicas, router_token_file=settings.router_token_file,
        drift_url=settings.drift_url, prometheus_url=settings.prometheus_url,
        # Replicas are reached by pod IP; their certificate names the Service, as ROUTER_ADMIN_URL's host does.
        verify=verify, router_server_name=admin.hostname if admin.scheme == "https" else None,
    )
    elector: LeaseElector | AlwaysLeader
    if settings.leader_election:
        elector = LeaseElector(client, namespace, settings.lease_name, settings.identity,
                               lease_seconds=settings.lease_seconds, renew_seconds=settings.renew_seconds)
    else:
        elector = AlwaysLeader()
    traffic = RouterAdminTraffic(settings.router_admin_url, settings.router_token_file, verify=verify)
    reconciler = Reconciler(store=store, traffic=traffic, providers=providers, elector=elector, metrics=metrics,
                            max_concurrent=settings.max_concurrent, resync_seconds=settings.resync_seconds,
                            gates=make_gate_source(settings.model_repo))
    return reconciler, elector, client


def build_retrainer(settings: Settings, client: KubeClient, elector: LeaseElector | AlwaysLeader,
                    tls: TLS = PLAIN) -> Retrainer | None:
    """The RetrainPolicy loop, when the chart names the trainer CronJob its Jobs are made from."""
    if not settings.trainer_cronjob:
        return None
    namespace = _namespace(settings)
    verify = tls.client_context()
    traffic = RouterAdminTraffic(settings.router_admin_url, settings.router_token_file, verify=verify)
    return Retrainer(
        store=KubePolicyStore(client, namespace), runs=KubeJobRuns(client, namespace, settings.trainer_cronjob),
        rollouts=KubeRollouts(client, namespace), serving=RouterServing(traffic, settings.model_repo),
        reports=DriftReports(settings.drift_url, verify), model_repo_path=settings.model_repo,
        interval_s=settings.retrain_interval_s, is_leader=lambda: elector.is_leader,
    )


async def serve(settings: Settings, tls: TLS = PLAIN) -> None:
    metrics = Metrics()
    reconciler, elector, client = build_cluster(settings, metrics, tls)
    retrainer = build_retrainer(settings, client, elector, tls)
    log.info("controller for namespace %s as %s; router %s", _namespace(settings), settings.identity,
             settings.router_service or settings.router_admin_url)
    try:
        await run_until_signal(reconciler, elector, settings, metrics, tls=tls,
                               also=[retrainer.run()] if retrainer is not None else [])
    finally:
        await client.aclose()


async def run_until_signal(reconciler: Reconciler, elector, settings: Settings, metrics: Metrics,
                           done: asyncio.Future | None = None, tls: TLS = PLAIN,
                           also: list[Coroutine[Any, Any, None]] | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(reconciler.run(), name="reconciler"),
             asyncio.create_task(elector.run(), name="elector"),
             *(asyncio.create_task(loop_, name="retrainer") for loop_ in also or [])]
    server = health = None
    if settings.http_port:
        server = _Server(uvicorn.Config(HealthApp(metrics.registry, lambda: reconciler.ready), host=settings.http_host,
                                        port=settings.http_port, lifespan="off", access_log=False, log_config=None,
                                        **tls.uvicorn_options()))  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE set
        health = asyncio.create_task(server.serve(), name="health")
        tasks.append(health)
    waiters = [asyncio.create_task(stop.wait())] + ([done] if done is not None else [])
    try:
        finished, _ = await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        if server is not None and health is not None:
            server.should_exit = True
            await asyncio.wait([health], timeout=5)  # let uvicorn close its socket rather than cancel it mid-loop
        await elector.release()
        for task in [*tasks, *waiters]:
            task.cancel()
        await asyncio.gather(*tasks, *waiters, return_exceptions=True)
        log.info("controller stopped")


async def run_local(settings: Settings, files: list[Path], state_dir: Path, keep_running: bool,
                    tls: TLS = PLAIN, trainer_command: str | None = None) -> int:
    """The engine against the local router, rollouts from files; returns 0 when every rollout ended
    Succeeded, 1 when one ended otherwise."""
    metrics = Metrics()
    store = FileRolloutStore(files, state_dir)
    policies = FilePolicyStore(files, state_dir)
    keep_running = keep_running or len(policies) > 0  # a policy never ends: run until SIGTERM
    verify = tls.client_context()
    providers = make_providers(
        router_replicas=_static_replicas(settings.router_admin_url), router_token_file=settings.router_token_file,
        drift_url=settings.drift_url, prometheus_url=settings.prometheus_url, verify=verify,
    )
    done: asyncio.Future = asyncio.get_running_loop().create_future()
    ended: dict[str, ModelRollout] = {}
    total = len(await store.list())

    def progress(before: ModelRollout, after: ModelRollout) -> None:
        print_progress(before, after)
        if after.status.phase.is_terminal():
            ended[after.key] = after
            if len(ended) == total and not keep_running and not done.done():
                done.set_result(None)

    reconciler = Reconciler(store=store, traffic=RouterAdminTraffic(settings.router_admin_url,
                                                                   settings.router_token_file, verify=verify),
                            providers=providers, elector=AlwaysLeader(), metrics=metrics,
                            resync_seconds=min(settings.resync_seconds, 5.0), on_outcome=progress,
                            gates=make_gate_source(settings.model_repo))
    for rollout in await store.list():
        if rollout.status.phase.is_terminal():
            ended[rollout.key] = rollout
            print(f"{rollout.name}: already {rollout.status.phase.value} ({rollout.status.message}); "
                  f"delete {store.state_file(rollout)} to run it again", flush=True)
    if len(ended) == total and not keep_running:
        return _exit_code(ended)
    also, runs = [], None
    if len(policies):
        if not trainer_command:
            raise ConfigError("the files hold a RetrainPolicy: local mode needs --trainer-command to train with")
        runs = SubprocessRuns(trainer_command, state_dir)
        traffic = RouterAdminTraffic(settings.router_admin_url, settings.router_token_file, verify=verify)
        retrainer = Retrainer(store=policies, runs=runs, rollouts=LocalRollouts(store, state_dir),
                              serving=RouterServing(traffic, settings.model_repo),
                              reports=DriftReports(settings.drift_url, verify), model_repo_path=settings.model_repo,
                              interval_s=min(settings.retrain_interval_s, 2.0))
        also.append(retrainer.run())
    local = settings.model_copy(update={"http_port": 0})
    try:
        await run_until_signal(reconciler, AlwaysLeader(), local, metrics, None if keep_running else done, also=also)
    finally:
        if runs is not None:
            runs.stop()
    return _exit_code(ended)


def _exit_code(ended: dict[str, ModelRollout]) -> int:
    return 0 if ended and all(r.status.phase.value == "Succeeded" for r in ended.values()) else 1


def print_progress(before: ModelRollout, after: ModelRollout) -> None:
    """One line per new decision, and the analysis figures when a run completed (local mode's output)."""
    seen = len(before.status.decisions)
    new = after.status.decisions[seen:] if len(after.status.decisions) >= seen else after.status.decisions
    run = after.status.last_analysis
    if run is not None and run != before.status.last_analysis:
        figures = "; ".join(m.message or f"{m.name} {m.verdict.value}" for m in run.metrics)
        print(f"{run.time:%H:%M:%S} {after.name} analysis {run.verdict.value}: {figures}", flush=True)
    for decision in new:
        weight = f" weight {decision.weight}%" if decision.weight is not None else ""
        print(f"{decision.time:%H:%M:%S} {after.name} {decision.action}{weight}: {decision.message}", flush=True)
    if before.status.phase is not after.status.phase:
        print(f"{after.name}: {after.status.phase.value} - {after.status.message or ''}", flush=True)
