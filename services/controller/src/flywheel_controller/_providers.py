"""One analysis interval's measurements, from whichever providers the rollout's metrics name.

A rollout's `spec.analysis.metrics` may mix providers (router error rate, drift share, a PromQL KPI).
`MetricProviders` hands each configured provider its own metrics in one call (so the router's replicas are
read once per interval, not once per metric), runs the providers concurrently, and returns one Observation
per metric in the spec's order. A provider that is not configured, or that breaks its never-raise contract,
yields errors on its metrics (Inconclusive), never a crash of the reconcile.

`make_providers` is the only factory: it builds what the settings name and refuses settings that make no
sense with the `Config 'X' has value 'Y': expected ...` message, instead of quietly measuring nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from flywheel_contracts import MetricSpec, ModelRollout

from ._ports import MetricProvider
from ._provider_drift import DriftProvider
from ._provider_prometheus import PrometheusProvider
from ._provider_router import Replicas, RouterStatsProvider
from ._types import Observation

log = logging.getLogger("flywheel_controller.providers")

SETTINGS = {
    "router": "FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL or FLYWHEEL_CONTROLLER_ROUTER_SERVICE",
    "drift": "FLYWHEEL_CONTROLLER_DRIFT_URL",
    "prometheus": "FLYWHEEL_CONTROLLER_PROMETHEUS_URL",
}
"""The setting that configures each provider, named in the error of a metric whose provider is missing."""


class MetricProviders:
    def __init__(
        self,
        router: MetricProvider | None,
        drift: MetricProvider | None,
        prometheus: MetricProvider | None,
    ) -> None:
        self.providers: dict[str, MetricProvider | None] = {"router": router, "drift": drift, "prometheus": prometheus}

    async def measure(self, rollout: ModelRollout, since: datetime | None, now: datetime) -> list[Observation]:
        """One Observation per metric of `rollout.spec.analysis.metrics`, in that order. Never raises."""
        metrics = rollout.spec.analysis.metrics
        groups: dict[str, list[MetricSpec]] = {}
        for metric in metrics:
            groups.setdefault(metric.provider, []).append(metric)
        names = list(groups)
        results = await asyncio.gather(*(self._group(rollout, n, groups[n], since, now) for n in names))
        by_name = {o.name: o for group in results for o in group}
        return [by_name[m.name] for m in metrics]

    async def baseline(self, rollout: ModelRollout) -> None:
        """Let providers that keep a baseline (the router's cumulative counters) take it now: call when the
        rollout's candidate starts taking traffic, so its first interval is measured rather than spent."""
        for provider in self.providers.values():
            # Not part of the MetricProvider Protocol: only a provider that subtracts snapshots needs it.
            take = getattr(provider, "baseline", None)
            if take is not None:
                await take(rollout)

    async def forget(self, rollout_key: str) -> None:
        for provider in self.providers.values():
            if provider is not None:
                await provider.forget(rollout_key)

    async def _group(
        self, rollout: ModelRollout, name: str, metrics: list[MetricSpec], since: datetime | None, now: datetime
    ) -> list[Observation]:
        provider = self.providers.get(name)
        if provider is None:
            return _errors(metrics, f"the {name} provider is not configured ({SETTINGS.get(name, name)})")
        try:
            observed = await provider.measure(rollout, metrics, since, now)
        except Exception as e:  # a provider must not raise; if one does, its metrics are Inconclusive, not the loop
            log.exception("the %s provider raised measuring %s", name, rollout.key)
            return _errors(metrics, f"the {name} provider failed: {type(e).__name__}: {e}")
        by_name = {o.name: o for o in observed}
        return [by_name.get(m.name) or _errors([m], f"the {name} provider returned no observation")[0]
                for m in metrics]


def _errors(metrics: list[MetricSpec], message: str) -> list[Observation]:
    return [Observation(name=m.name, kind="value", error=message) for m in metrics]


def make_providers(
    *,
    router_replicas: Replicas | None,
    router_token_file: Path | None,
    drift_url: str | None,
    prometheus_url: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] | None = None,
    verify: ssl.SSLContext | bool = True,
    router_server_name: str | None = None,
) -> MetricProviders:
    """The providers the settings configure (None: that provider is off; its metrics are Inconclusive with a
    message naming the setting). ValueError on settings that cannot work. A missing router token file is not
    refused here: like the traffic client, the router provider says so on every measurement. `verify` checks
    https peers (one context for all, made once); `router_server_name` is the name the router replicas'
    certificate carries when they are reached by address."""
    router = None
    if router_replicas is not None:
        if not callable(router_replicas):
            raise ValueError(f"router replicas {router_replicas!r}: expected an async callable giving "
                             "(name, admin URL) pairs")
        router = RouterStatsProvider(router_replicas, router_token_file, transport, clock, verify=verify,
                                     tls_server_name=router_server_name)
    drift = (DriftProvider(_url(SETTINGS["drift"], drift_url), transport, verify=verify)
             if drift_url is not None else None)
    prometheus = (PrometheusProvider(_url(SETTINGS["prometheus"], prometheus_url), transport, verify=verify)
                  if prometheus_url is not None else None)
    return MetricProviders(router, drift, prometheus)


def _url(setting: str, value: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as e:
        raise ValueError(f"Config '{setting}' has value {value!r}: expected an http(s) URL ({e})") from e
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"Config '{setting}' has value {value!r}: expected an http(s) URL such as http://host:port "
                         "(or leave it unset to turn the provider off)")
    return value.rstrip("/")
