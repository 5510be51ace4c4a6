"""What the RetrainPolicy loop reads before deciding: the serving version (the router's stable) and the drift
service's report on it.

Both fail quiet and safe: when the router or the drift service cannot be read, the loop sees no serving version
or no report, and no trigger that needs them fires (a Schedule or a person's request still does). Retraining
on evidence nobody could read would be a guess.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import httpx
from pydantic import ValidationError

from flywheel_contracts.drift import Report, VersionReport

from ._gates_repo import trained_at
from ._http import KeptClient
from ._ports import TrafficError, TrafficRouter
from ._retrain import Serving

log = logging.getLogger("flywheel.controller.retrain")

REPORT_TIMEOUT_S = 5.0


class RouterServing:
    """The version serving a model: its route's stable, with the training cut-off from the model repository."""

    def __init__(self, traffic: TrafficRouter, repo: Path | None) -> None:
        self.traffic, self.repo = traffic, repo

    async def __call__(self, model: str) -> Serving | None:
        try:
            route = await self.traffic.get_route(model)
        except TrafficError as e:
            log.warning("cannot read the route of %s from the router: %s", model, e)
            return None
        if route is None:
            return None
        version = route.stable.version
        cutoff = await asyncio.to_thread(trained_at, self.repo, model, version) if self.repo is not None else None
        return Serving(version=version, trained_at=cutoff)


class DriftReports:
    """`GET /v1/report?model=&version=` of the drift service, typed (flywheel_contracts.drift.Report)."""

    def __init__(self, base_url: str | None, verify: ssl.SSLContext | bool = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._kept = KeptClient(transport, REPORT_TIMEOUT_S, verify)

    async def aclose(self) -> None:
        await self._kept.aclose()

    async def __call__(self, model: str, version: str) -> VersionReport | None:
        if self.base_url is None:
            return None
        try:
            response = await self._kept.client().get(f"{self.base_url}/v1/report",
                                                     params={"model": model, "version": version})
            response.raise_for_status()
            report = Report.model_validate_json(response.content)
        except (httpx.HTTPError, ValidationError) as e:
            log.warning("no drift report on %s/%s: %s", model, version, str(e).splitlines()[0])
            return None
        return next((v for v in report.versions if v.model == model and v.version == version), None)
