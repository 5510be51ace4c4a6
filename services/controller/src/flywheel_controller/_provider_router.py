"""The router's own counters as a MetricProvider: error rate, latency, declines, shadow agreement.

Every router replica serves `GET /v1/stats/{model}` (admin port, bearer token): flywheel_contracts.RouterStats,
that replica's figures since it started. Nothing is windowed on the router's side, so this provider keeps,
per rollout, the last snapshot it read of each replica (the baseline) and hands the pair of snapshots to
`_router_metrics.window`, which subtracts them (and copes with restarts), then `_router_metrics.observe`
turns the window into one Observation per metric.

Replicas come from a callable: one static URL locally, EndpointSlices in a cluster (`_discovery`). They are
read concurrently with a short timeout; a replica that fails is left out of the interval (its traffic is
missed, not guessed) and counted in `replica_failures`; only when none answers do the metrics fail, with the
cause. A replica that failed has no baseline for the next interval either, so it is skipped once more and
counts again from the interval after: a window never silently spans two intervals.

The baseline should be taken when the candidate starts taking traffic: the reconciler calls `baseline()`
then. When it did not (a controller restart, a replica that was down), the first `measure` takes it and
answers "first interval: baseline taken", which the analysis treats as Inconclusive.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import httpx
from pydantic import ValidationError

from flywheel_contracts import MetricSpec, ModelRollout, RouterStats

from . import _router_metrics
from ._http import KeptClient
from ._ports import TrafficError
from ._traffic import TOKEN_SETTING, describe_failure, read_token, router_message
from ._types import Observation, stable_version

log = logging.getLogger("flywheel_controller.providers")

Replicas = Callable[[], Awaitable[list[tuple[str, str]]]]
"""(replica name, admin base URL) of every router replica, as of now."""
STATS_TIMEOUT_S = 2.0
"""One replica's stats request (s): short, so one hung replica delays the analysis by 2 s at most."""
FIRST_INTERVAL = "first interval: baseline taken"
_Kind = Literal["proportion", "quantile", "value"]


@dataclass(frozen=True)
class _Baseline:
    stats: dict[str, RouterStats]  # replica name -> its snapshot
    taken: datetime



def _failed(metrics: list[MetricSpec], message: str, kind: _Kind = "proportion") -> list[Observation]:
    """The same error for every metric (the kind does not matter to the analysis once `error` is set)."""
    return [Observation(name=m.name, kind=kind, error=message) for m in metrics]


class RouterStatsProvider:
    def __init__(
        self,
        replicas: Replicas,
        token_file: Path | None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        timeout: float = STATS_TIMEOUT_S,
        verify: ssl.SSLContext | bool = True,
        tls_server_name: str | None = None,
    ) -> None:
        self.replicas = replicas
        self.token_file = token_file
        self.transport = transport
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.timeout = timeout
        # Replicas are reached by pod IP (EndpointSlices) but certified for the router's Service name: with https
        # each one is verified (SNI and hostname check, httpcore's `sni_hostname`) against this name.
        self._extensions = {"sni_hostname": tls_server_name} if tls_server_name else None
        self.replica_failures = 0  # replicas left out of an interval, since start (for /metrics)
        self._baselines: dict[str, _Baseline] = {}
        self._kept = KeptClient(transport, timeout, verify)

    async def aclose(self) -> None:
        await self._kept.aclose()

    async def baseline(self, rollout: ModelRollout) -> int:
        """Take the rollout's baseline now (call when its candidate starts taking traffic), so the first
        interval is measured instead of spent on the baseline. Never raises; returns the replicas read (0:
        none answered, the first `measure` will take it)."""
        snapshots, _ = await self._read(rollout.spec.model)
        if snapshots:
            self._baselines[rollout.key] = _Baseline(snapshots, self.clock())
        return len(snapshots)

    async def measure(
        self, rollout: ModelRollout, metrics: list[MetricSpec], since: datetime | None, now: datetime
    ) -> list[Observation]:
        if not metrics:
            return []
        snapshots, problems = await self._read(rollout.spec.model)
        if not snapshots:
            return _failed(metrics, f"router statistics unavailable: {'; '.join(problems)}")
        if problems:
            log.warning("router statistics of %s: %d replica(s) left out: %s",
                        rollout.key, len(problems), "; ".join(problems))
        before = self._baselines.get(rollout.key)
        self._baselines[rollout.key] = _Baseline(snapshots, now)
        if before is None:
            return _failed(metrics, FIRST_INTERVAL)
        start = since or before.taken
        window = _router_metrics.window(
            before.stats,
            snapshots,
            since=start,
            candidate=rollout.spec.candidate.version,
            stable=stable_version(rollout),
            seconds=(now - start).total_seconds(),
        )
        shadow = rollout.spec.strategy.type == "Shadow"
        return [_router_metrics.observe(m, window if window.replicas else None, shadow=shadow) for m in metrics]

    async def forget(self, rollout_key: str) -> None:
        self._baselines.pop(rollout_key, None)

    # -- reading ---------------------------------------------------------------------------------------
    async def _read(self, model: str) -> tuple[dict[str, RouterStats], list[str]]:
        """Every replica's snapshot that could be read, and a line per one that could not."""
        try:
            replicas = await self.replicas()
            token = read_token(self.token_file)
        except TrafficError as e:
            return {}, [str(e)]
        except Exception as e:  # discovery is another module's; whatever it raises, say it and carry on
            return {}, [f"cannot list the router replicas: {e}"]
        if not replicas:
            return {}, ["no router replicas found"]
        client = self._kept.client()
        results = await asyncio.gather(*(self._one(client, url, model, token) for _, url in replicas))
        snapshots: dict[str, RouterStats] = {}
        problems: list[str] = []
        for (name, url), result in zip(replicas, results, strict=True):
            if isinstance(result, RouterStats):
                snapshots[name] = result
            else:
                problems.append(f"{name} ({url}): {result}")
        self.replica_failures += len(problems)
        return snapshots, problems

    async def _one(self, client: httpx.AsyncClient, url: str, model: str, token: str) -> RouterStats | str:
        try:
            response = await client.get(
                f"{url.rstrip('/')}/v1/stats/{model}", headers={"authorization": f"Bearer {token}"},
                extensions=self._extensions,
            )
        except httpx.HTTPError as e:
            return f"unreachable: {describe_failure(e)}"
        if response.status_code == 401:
            return f"refused the controller's token ({TOKEN_SETTING}): {router_message(response)}"
        if response.status_code != 200:
            return f"answered {response.status_code}: {router_message(response)}"
        try:
            return RouterStats.model_validate_json(response.content)
        except ValidationError as e:
            return f"answered something that is not RouterStats: {e.errors()[0]['msg']}"
