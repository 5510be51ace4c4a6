"""The drift service's report as metric values: shares, alarm and alert counts, the drift flag; clear errors when
there is no report yet or its shape changed.

`FakeDriftService` answers `GET /v1/report?model=&version=` with documents shaped as
services/drift/src/flywheel_drift/_report.py builds them (extra fields included, as the service sends them).
"""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from flywheel_contracts import MetricSpec, ModelRollout
from flywheel_controller._provider_drift import DriftProvider

pytestmark = pytest.mark.anyio
URL = "http://drift.test:8070"
NOW = datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def feature(name: str, drift: bool | None) -> dict:
    entry = {"name": name, "kind": "numeric", "test": "cvm+mann-whitney", "reference_mean": 1.0}
    if drift is not None:  # a feature has `last` once a window closed
        entry["last"] = {"p_value": 0.001 if drift else 0.4, "q_value": 0.01, "distance": 0.2, "psi": 0.1,
                         "drift": drift, "mean": 1.2}
        entry["current_histogram"] = [1, 2, 3]
    return entry


def version_report(version: str, *, drifted: int = 0, clean: int = 4, unwindowed: int = 1, alarms: int = 0,
                   alerts: int = 0, drift: bool = False, rows: int = 6000) -> dict:
    features = ([feature(f"d{i}", True) for i in range(drifted)] + [feature(f"c{i}", False) for i in range(clean)]
                + [feature(f"u{i}", None) for i in range(unwindowed)])
    return {
        "model": "fraud", "version": version, "rows": rows, "windows": 3, "open_window_rows": 12, "drift": drift,
        "episodes": {"data": {"active": drift}}, "last_window": {"index": 2, "rows": 2000}, "features": features,
        "history": [], "online": {"threshold": 7.1, "alarms": [{"feature": "amount_log"}] * alarms},
        "mmd": [], "performance": None, "performance_history": [], "predictions_logged": rows,
        "predictions_labelled": 0, "alerts": [{"category": "data"}] * alerts,
    }


class FakeDriftService:
    def __init__(self, *reports: dict) -> None:
        self.reports = list(reports)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/v1/report"
        model, version = request.url.params.get("model"), request.url.params.get("version")
        chosen = [r for r in self.reports if r["model"] == model and r["version"] == version]
        return httpx.Response(200, json={"ready": True, "versions": chosen})


def rollout(stable: str | None = "v1") -> ModelRollout:
    return ModelRollout.model_validate({
        "name": "fraud-v2",
        "spec": {"model": "fraud", "candidate": {"version": "v2"},
                 "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}]}}},
        "status": {"stableVersion": stable} if stable else {},
    })


def metric(name: str, relative: bool = False) -> MetricSpec:
    return MetricSpec(name=name.replace("_", "-"), provider="drift", metric=name, max=0.2, relativeToStable=relative)


async def measure(service, *metrics: MetricSpec, r: ModelRollout | None = None):
    provider = DriftProvider(URL, transport=httpx.MockTransport(service))
    return await provider.measure(r or rollout(), list(metrics), None, NOW)


async def test_each_metric_is_read_from_the_candidates_report() -> None:
    service = FakeDriftService(version_report("v2", drifted=1, clean=3, unwindowed=2, alarms=2, alerts=1, drift=True))
    observed = await measure(service, metric("drifted_feature_share"), metric("online_alerts"), metric("alerts"),
                             metric("drift"))
    assert [(o.name, o.kind, o.value, o.samples, o.error) for o in observed] == [
        ("drifted-feature-share", "value", 0.25, 6000, None),  # 1 of the 4 features with a closed window
        ("online-alerts", "value", 2.0, 6000, None),
        ("alerts", "value", 1.0, 6000, None),
        ("drift", "value", 1.0, 6000, None),
    ]
    assert [dict(r.url.params) for r in service.requests] == [{"model": "fraud", "version": "v2"}]


async def test_relative_to_stable_reads_the_stables_report_too() -> None:
    service = FakeDriftService(version_report("v2", drifted=2, clean=2), version_report("v1", drifted=1, clean=3))
    [share] = await measure(service, metric("drifted_feature_share", relative=True))
    assert (share.value, share.stable_value) == (0.5, 0.25)
    assert sorted(r.url.params["version"] for r in service.requests) == ["v1", "v2"]


async def test_a_version_without_a_report_yet_is_named() -> None:
    [o] = await measure(FakeDriftService(version_report("v1")), metric("drift"))
    assert o.error == "the drift service has no report for fraud/v2 yet" and o.value is None
    [o] = await measure(FakeDriftService(version_report("v2")), metric("drift", relative=True), r=rollout("v0"))
    assert o.error == "the drift service has no report for fraud/v0 yet"


async def test_a_share_before_any_window_closed_is_an_error_not_zero() -> None:
    [o] = await measure(FakeDriftService(version_report("v2", clean=0, unwindowed=5)), metric("drifted_feature_share"))
    assert o.error == "the drift service has not closed a window for fraud/v2 yet"


async def test_relative_to_stable_without_a_stable_version_is_an_error() -> None:
    [o] = await measure(FakeDriftService(version_report("v2")), metric("alerts", relative=True), r=rollout(None))
    assert "needs a stable version" in o.error


async def test_an_unknown_metric_names_the_known_ones() -> None:
    [o] = await measure(FakeDriftService(version_report("v2")), metric("psi_max"))
    assert o.error == ("unknown drift metric 'psi_max': the drift provider knows drifted_feature_share, "
                       "online_alerts, alerts, drift")


async def test_a_changed_report_shape_is_a_clear_error_not_a_key_error() -> None:
    report = version_report("v2")
    del report["online"]["alarms"]
    [o] = await measure(FakeDriftService(report), metric("online_alerts"))
    assert o.error.startswith("the drift service's report has an unexpected shape at 'versions.0.online.alarms'")


async def test_an_unreachable_or_failing_service_fails_every_metric_with_the_cause() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    observed = await measure(down, metric("drift"), metric("alerts"))
    assert [o.error for o in observed] == [f"cannot reach the drift service at {URL}: ConnectError: [Errno 111] "
                                           "Connection refused"] * 2
    not_ready = httpx.Response(503, json={"error": "replaying the spool", "type": "not_ready"})
    [o] = await measure(lambda r: not_ready, metric("drift"))
    assert o.error == "the drift service answered 503: replaying the spool"


async def test_no_metrics_asks_nothing() -> None:
    service = FakeDriftService()
    assert await measure(service) == [] and service.requests == []


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="drift service URL"):
        DriftProvider("drift:8070")


def contract_report(version: str, **kw) -> dict:
    """A whole report as the drift service serves it, valid under flywheel_contracts.drift.Report."""
    entry = {**version_report(version, **kw), "verdict": "drifted" if kw.get("drift") else "stable",
             "reference": {"rows": 5000}, "episodes": {"data": {"active": False, "last_alert_at": None}}}
    return {"schema_version": 1, "ready": True, "ready_after_s": 0.4, "replayed_events": 0,
            "backlog": {"rows": 0, "bytes": 0}, "mmd": "off", "settings": {}, "versions": [entry]}


class ContractDriftService(FakeDriftService):
    def __init__(self, document: dict) -> None:
        super().__init__()
        self.document = document

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json=self.document)


async def test_a_report_that_follows_the_drift_contract_is_read() -> None:
    from flywheel_contracts.drift import Report

    document = contract_report("v2", drifted=1, clean=3, unwindowed=0)
    Report.model_validate(document)  # the document is what the drift service's own models build
    [share, drift] = await measure(ContractDriftService(document), metric("drifted_feature_share"), metric("drift"))
    assert (share.value, drift.value, share.samples) == (0.25, 0.0, 6000)


async def test_a_report_schema_version_this_controller_does_not_know_is_refused() -> None:
    document = {**contract_report("v2"), "schema_version": 99}
    [o] = await measure(ContractDriftService(document), metric("drift"))
    assert o.value is None and "schema_version 99" in o.error and "upgrade the controller" in o.error
