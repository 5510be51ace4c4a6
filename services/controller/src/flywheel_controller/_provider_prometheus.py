"""A PromQL query as a MetricProvider: whatever else a team watches (a business KPI, a downstream error
rate, the transformer's feature lookups) can gate a rollout.

Each metric's `query` is run as an instant query at the interval's end (`GET /api/v1/query?query=&time=`),
after replacing `{{model}}`, `{{version}}` (the candidate's) and `{{stable}}` (the stable's). The query is the
user's and so is its window: `rate(x[5m])` at `now` is what they asked for. It must come back as exactly one
number (a scalar, or a vector of one sample); no sample, several samples or a NaN/Inf are errors (the metric
is Inconclusive) rather than a guess. relativeToStable runs the query a second time with `{{version}}` set
to the stable version, for `stable_value`.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flywheel_contracts import MetricSpec, ModelRollout

from ._http import KeptClient
from ._traffic import describe_failure
from ._types import Observation, stable_version

QUERY_TIMEOUT_S = 10.0
"""One query (s); Prometheus' own default query timeout is 2 minutes, far more than an analysis should wait."""

_LOOSE = ConfigDict(extra="ignore", frozen=True)


class _Data(BaseModel):
    model_config = _LOOSE

    result_type: Literal["vector", "scalar", "matrix", "string"] = Field(alias="resultType")
    result: Any = None  # vector: [{"metric": {...}, "value": [t, "1.5"]}, ...]; scalar: [t, "1.5"]


class _Answer(BaseModel):
    model_config = _LOOSE

    status: Literal["success", "error"]
    data: _Data | None = None
    error_type: str | None = Field(None, alias="errorType")
    error: str | None = None



class QueryError(Exception):
    """The query gave no usable number; the message is the metric's error."""


class PrometheusProvider:
    def __init__(
        self,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = QUERY_TIMEOUT_S,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL {base_url!r}: expected http[s]://host:port")
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
        client = self._client()
        return list(await asyncio.gather(*(self._one(client, rollout, m, now) for m in metrics)))

    async def forget(self, rollout_key: str) -> None:
        pass  # nothing kept: each query carries its own window

    async def _one(self, client: httpx.AsyncClient, rollout: ModelRollout, metric: MetricSpec, now: datetime
                   ) -> Observation:
        model, candidate, stable = rollout.spec.model, rollout.spec.candidate.version, stable_version(rollout)
        template = metric.query or ""
        try:
            if stable is None and ("{{stable}}" in template or metric.relative_to_stable):
                raise QueryError("the query needs the stable version and this rollout has none yet")
            value = await self.query(client, render(template, model, candidate, stable), now)
            stable_value = None
            if metric.relative_to_stable:
                stable_value = await self.query(client, render(template, model, stable, stable), now)
        except QueryError as e:
            return Observation(name=metric.name, kind="value", error=str(e))
        return Observation(name=metric.name, kind="value", value=value, stable_value=stable_value)

    async def query(self, client: httpx.AsyncClient, promql: str, now: datetime) -> float:
        """The one finite number `promql` gives at `now`; QueryError otherwise."""
        try:
            response = await client.get(
                f"{self.base_url}/api/v1/query", params={"query": promql, "time": f"{now.timestamp():.3f}"}
            )
        except httpx.HTTPError as e:
            raise QueryError(f"cannot reach Prometheus at {self.base_url}: {describe_failure(e)}") from e
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as e:
            raise QueryError(
                f"Prometheus answered {response.status_code} with something that is not a query result: "
                f"{response.text[:200]}"
            ) from e
        if answer.status == "error" or answer.data is None:
            raise QueryError(f"Prometheus refused the query ({answer.error_type or response.status_code}): "
                             f"{answer.error or 'no error text'}; query: {promql}")
        return _number(answer.data, promql)


def render(template: str, model: str, version: str | None, stable: str | None) -> str:
    """The query with its placeholders filled (model and version names cannot hold a quote: routes.py)."""
    return (template.replace("{{model}}", model)
            .replace("{{version}}", version or "")
            .replace("{{stable}}", stable or ""))


def _number(data: _Data, promql: str) -> float:
    if data.result_type == "scalar":
        sample = data.result
    elif data.result_type == "vector":
        samples = data.result or []
        if not samples:
            raise QueryError(f"query returned no sample: {promql}")
        if len(samples) > 1:
            raise QueryError(f"query returned {len(samples)} samples, expected one (aggregate it, e.g. sum(...)): "
                             f"{promql}")
        sample = samples[0].get("value") if isinstance(samples[0], dict) else None
    else:
        raise QueryError(f"query returned a {data.result_type}, expected one number (an instant vector or a "
                         f"scalar): {promql}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise QueryError(f"query returned a malformed sample {sample!r}: {promql}") from e
    if not math.isfinite(value):
        raise QueryError(f"query returned {sample[1]}, not a finite number: {promql}")
    return value
