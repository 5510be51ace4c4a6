"""The drift service's verdicts as a MetricProvider: does the candidate see traffic unlike its training data?

The drift service (services/drift) tests each model version's live traffic against that version's training
reference and serves what it knows at `GET /v1/report?model=&version=` (its `_report.py`). A rollout can gate
on it: a candidate whose inputs drift from what it was trained on, or whose online detector alarms, should
not take more traffic. Metrics (kind "value", judged against min/max without statistics):

- `drifted_feature_share`: features whose last closed window drifted / features with a closed window
- `online_alerts`: alarms of the online (per-row CUSUM) detector
- `alerts`: alerts the service sent for the version
- `drift`: 1.0 when the service considers the version drifting (last window or an active episode), else 0.0

The figures are the service's current state for the version, not a delta over (since, now]: drift is a
property of the traffic the version has seen, and the service windows it itself. `samples` is the rows the
service analysed. relativeToStable reads the stable version's report too, for `stable_value`.

The report's contract is flywheel_contracts.drift (the models the drift service builds it with). It is parsed
here into small private models holding only the fields read, ignoring the rest as the contract allows
(additions keep its schema_version), so a change of shape becomes an error naming the field rather than a
KeyError deep in the analysis, and a schema_version this controller does not know is refused, never guessed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from flywheel_contracts import MetricSpec, ModelRollout
from flywheel_contracts.drift import SCHEMA_VERSION as DRIFT_SCHEMA_VERSION

from ._http import KeptClient
from ._traffic import describe_failure, router_message
from ._types import Observation, stable_version

REPORT_TIMEOUT_S = 10.0
"""The report is built under the service's lock and holds histograms: allow it a moment."""

_LOOSE = ConfigDict(extra="ignore", frozen=True)


class _Last(BaseModel):
    model_config = _LOOSE

    drift: bool | None = None


class _Feature(BaseModel):
    model_config = _LOOSE

    name: str
    last: _Last | None = None  # absent until a window closes


class _Online(BaseModel):
    model_config = _LOOSE

    alarms: list[Any]


class _VersionReport(BaseModel):
    model_config = _LOOSE

    model: str
    version: str
    rows: int
    drift: bool
    features: list[_Feature]
    online: _Online
    alerts: list[Any]


class _Report(BaseModel):
    model_config = _LOOSE

    schema_version: int = 1  # reports from before the field were version 1
    versions: list[_VersionReport]


def _drifted_share(report: _VersionReport) -> float | None:
    judged = [f.last for f in report.features if f.last is not None and f.last.drift is not None]
    return sum(1 for last in judged if last.drift) / len(judged) if judged else None


METRICS: dict[str, Callable[[_VersionReport], float | None]] = {
    "drifted_feature_share": _drifted_share,
    "online_alerts": lambda r: float(len(r.online.alarms)),
    "alerts": lambda r: float(len(r.alerts)),
    "drift": lambda r: 1.0 if r.drift else 0.0,
}
"""Metric name -> its value from one version's report (None: not measurable yet)."""



class _Unavailable(Exception):
    """The report could not be had; the message is every metric's error."""


class DriftProvider:
    def __init__(
        self,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = REPORT_TIMEOUT_S,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"drift service URL {base_url!r}: expected http[s]://host:port")
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self.timeout = timeout
        self._kept = KeptClient(transport, timeout, verify)

    def _client(self) -> httpx.AsyncClient:
        return self._kept.client()

    async def aclose(self) -> None:
        await self._kept.aclose()

    async def measure(
        self, rollout: ModelRollout, metrics: list[MetricSpec], since: datetime | None, now: datetime
    ) -> list[Observation]:
        if not metrics:
            return []
        model, candidate, stable = rollout.spec.model, rollout.spec.candidate.version, stable_version(rollout)
        relative = any(m.relative_to_stable for m in metrics)
        try:
            client = self._client()
            if relative and stable is not None:
                report, stable_report = await asyncio.gather(
                    self._report(client, model, candidate), self._report(client, model, stable)
                )
            else:
                report, stable_report = await self._report(client, model, candidate), None
        except _Unavailable as e:
            return [Observation(name=m.name, kind="value", error=str(e)) for m in metrics]
        return [_observe(m, report, stable_report, f"{model}/{candidate}", stable and f"{model}/{stable}")
                for m in metrics]

    async def forget(self, rollout_key: str) -> None:
        pass  # nothing kept: every interval reads the service's current report

    async def _report(self, client: httpx.AsyncClient, model: str, version: str) -> _VersionReport | None:
        """The version's report; None when the service has none for it (yet). _Unavailable otherwise."""
        try:
            response = await client.get(f"{self.base_url}/v1/report", params={"model": model, "version": version})
        except httpx.HTTPError as e:
            raise _Unavailable(f"cannot reach the drift service at {self.base_url}: {describe_failure(e)}") from e
        if response.status_code != 200:
            raise _Unavailable(f"the drift service answered {response.status_code}: {router_message(response)}")
        try:
            report = _Report.model_validate_json(response.content)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "report"
            raise _Unavailable(f"the drift service's report has an unexpected shape at '{where}': {err['msg']}") from e
        if report.schema_version != DRIFT_SCHEMA_VERSION:
            raise _Unavailable(
                f"the drift service's report has schema_version {report.schema_version}; this controller reads "
                f"{DRIFT_SCHEMA_VERSION}: upgrade the controller with the drift service"
            )
        return next((v for v in report.versions if v.model == model and v.version == version), None)


def _observe(
    metric: MetricSpec,
    report: _VersionReport | None,
    stable_report: _VersionReport | None,
    candidate: str,
    stable: str | None,
) -> Observation:
    """One metric from the candidate's report (and the stable's, for relativeToStable)."""

    def error(message: str) -> Observation:
        return Observation(name=metric.name, kind="value", error=message)

    compute = METRICS.get(metric.metric or "")
    if compute is None:
        return error(f"unknown drift metric {metric.metric!r}: the drift provider knows {', '.join(METRICS)}")
    if report is None:
        return error(f"the drift service has no report for {candidate} yet")
    value = compute(report)
    if value is None:
        return error(f"the drift service has not closed a window for {candidate} yet")
    stable_value = None
    if metric.relative_to_stable:
        if stable is None:
            return error("relativeToStable needs a stable version and this rollout has none yet")
        if stable_report is None:
            return error(f"the drift service has no report for {stable} yet")
        stable_value = compute(stable_report)
        if stable_value is None:
            return error(f"the drift service has not closed a window for {stable} yet")
    return Observation(name=metric.name, kind="value", value=value, stable_value=stable_value, samples=report.rows)
