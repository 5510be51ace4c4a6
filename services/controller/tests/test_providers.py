"""Dispatching a rollout's metrics to their providers: one call per provider, results in the spec's order, a
missing or misbehaving provider turned into errors on its own metrics; and the factory that refuses nonsense."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from flywheel_contracts import ModelRollout
from flywheel_controller._provider_drift import DriftProvider
from flywheel_controller._provider_prometheus import PrometheusProvider
from flywheel_controller._provider_router import RouterStatsProvider
from flywheel_controller._providers import MetricProviders, make_providers
from flywheel_controller._types import Observation

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A provider that answers a value per metric and remembers what it was asked."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value
        self.calls: list[list[str]] = []
        self.forgotten: list[str] = []

    async def measure(self, rollout, metrics, since, now) -> list[Observation]:
        self.calls.append([m.name for m in metrics])
        return [Observation(name=m.name, kind="value", value=self.value) for m in metrics]

    async def forget(self, rollout_key: str) -> None:
        self.forgotten.append(rollout_key)


class WithBaseline(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.baselines: list[str] = []

    async def baseline(self, rollout) -> int:
        self.baselines.append(rollout.key)
        return 1


METRICS = [
    {"name": "errors", "provider": "router", "metric": "error_rate", "max": 0.01},
    {"name": "drift-share", "provider": "drift", "metric": "drifted_feature_share", "max": 0.2},
    {"name": "latency", "provider": "router", "metric": "latency_p99_seconds", "max": 0.25},
    {"name": "kpi", "provider": "prometheus", "query": 'sum(kpi{version="{{version}}"})', "min": 0.9},
]


def rollout(metrics: list[dict] = METRICS) -> ModelRollout:
    return ModelRollout.model_validate({
        "name": "fraud-v2",
        "namespace": "models",
        "spec": {"model": "fraud", "candidate": {"version": "v2"},
                 "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}]}},
                 "analysis": {"metrics": metrics}},
        "status": {"stableVersion": "v1"},
    })


async def test_each_provider_is_called_once_with_its_metrics_and_results_keep_the_spec_order() -> None:
    router, drift, prometheus = Recorder(1.0), Recorder(2.0), Recorder(3.0)
    observed = await MetricProviders(router, drift, prometheus).measure(rollout(), None, NOW)
    assert [(o.name, o.value) for o in observed] == [("errors", 1.0), ("drift-share", 2.0), ("latency", 1.0),
                                                     ("kpi", 3.0)]
    assert (router.calls, drift.calls, prometheus.calls) == ([["errors", "latency"]], [["drift-share"]], [["kpi"]])


async def test_a_provider_that_is_not_configured_names_its_setting() -> None:
    observed = await MetricProviders(Recorder(), None, None).measure(rollout(), None, NOW)
    assert [o.error for o in observed] == [
        None,
        "the drift provider is not configured (FLYWHEEL_CONTROLLER_DRIFT_URL)",
        None,
        "the prometheus provider is not configured (FLYWHEEL_CONTROLLER_PROMETHEUS_URL)",
    ]
    [o] = await MetricProviders(None, None, None).measure(rollout(METRICS[:1]), None, NOW)
    assert o.error.startswith("the router provider is not configured (FLYWHEEL_CONTROLLER_ROUTER_ADMIN_URL")


async def test_a_provider_that_raises_fails_only_its_own_metrics(caplog) -> None:
    class Broken(Recorder):
        async def measure(self, rollout, metrics, since, now):
            raise RuntimeError("bug")

    observed = await MetricProviders(Broken(), Recorder(), Recorder()).measure(rollout(), None, NOW)
    assert [o.error for o in observed] == ["the router provider failed: RuntimeError: bug", None,
                                           "the router provider failed: RuntimeError: bug", None]
    assert "the router provider raised measuring models/fraud-v2" in caplog.text


async def test_an_observation_a_provider_left_out_is_an_error() -> None:
    class Forgetful(Recorder):
        async def measure(self, rollout, metrics, since, now):
            return (await super().measure(rollout, metrics, since, now))[:1]

    observed = await MetricProviders(Forgetful(), None, None).measure(rollout(METRICS[:1] + METRICS[2:3]), None, NOW)
    assert [o.error for o in observed] == [None, "the router provider returned no observation"]


async def test_no_metrics_measures_nothing() -> None:
    router = Recorder()
    assert await MetricProviders(router, None, None).measure(rollout([]), None, NOW) == []
    assert router.calls == []


async def test_forget_and_baseline_fan_out() -> None:
    router, drift = WithBaseline(), Recorder()
    providers = MetricProviders(router, drift, None)
    await providers.baseline(rollout())
    await providers.forget("models/fraud-v2")
    assert router.baselines == ["models/fraud-v2"]
    assert router.forgotten == drift.forgotten == ["models/fraud-v2"]


async def replicas() -> list[tuple[str, str]]:
    return [("router", "http://127.0.0.1:8001")]


def test_make_providers_builds_what_is_configured_and_leaves_the_rest_off(tmp_path: Path) -> None:
    providers = make_providers(router_replicas=replicas, router_token_file=tmp_path / "token",
                               drift_url="http://drift:8070/", prometheus_url=None)
    assert isinstance(providers.providers["router"], RouterStatsProvider)
    assert isinstance(providers.providers["drift"], DriftProvider)
    assert providers.providers["drift"].base_url == "http://drift:8070"
    assert providers.providers["prometheus"] is None
    none = make_providers(router_replicas=None, router_token_file=None, drift_url=None, prometheus_url=None)
    assert list(none.providers.values()) == [None, None, None]
    assert isinstance(make_providers(router_replicas=None, router_token_file=None, drift_url=None,
                                     prometheus_url="https://prometheus.monitoring:9090").providers["prometheus"],
                      PrometheusProvider)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"drift_url": "drift:8070"}, "Config 'FLYWHEEL_CONTROLLER_DRIFT_URL' has value 'drift:8070': expected an http(s) URL"),
        ({"drift_url": ""}, "Config 'FLYWHEEL_CONTROLLER_DRIFT_URL' has value '': expected an http(s) URL"),
        ({"prometheus_url": "ftp://prometheus"}, "Config 'FLYWHEEL_CONTROLLER_PROMETHEUS_URL' has value 'ftp://prometheus'"),
        ({"prometheus_url": "http://"}, "Config 'FLYWHEEL_CONTROLLER_PROMETHEUS_URL' has value 'http://'"),
        ({"router_replicas": "http://router:8001"}, "expected an async callable"),
    ],
)
def test_make_providers_refuses_settings_that_cannot_work(settings, message) -> None:
    arguments = {"router_replicas": None, "router_token_file": None, "drift_url": None, "prometheus_url": None}
    with pytest.raises(ValueError) as refused:
        make_providers(**{**arguments, **settings})
    assert message in str(refused.value)


async def test_made_providers_measure_a_mixed_rollout_end_to_end(tmp_path: Path) -> None:
    def services(request: httpx.Request) -> httpx.Response:
        if request.url.host == "drift":
            report = {"model": "fraud", "version": "v2", "rows": 4000, "drift": False, "alerts": [],
                      "online": {"alarms": []}, "features": [{"name": "amount", "last": {"drift": False}}]}
            return httpx.Response(200, json={"versions": [report]})
        assert request.url.host == "prometheus" and request.url.params["query"] == 'sum(kpi{version="v2"})'
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "scalar", "result": [0, "0.95"]}})

    providers = make_providers(router_replicas=None, router_token_file=None, drift_url="http://drift:8070",
                               prometheus_url="http://prometheus:9090", transport=httpx.MockTransport(services))
    observed = await providers.measure(rollout(METRICS[1:2] + METRICS[3:]), None, NOW)
    assert [(o.name, o.value, o.samples, o.error) for o in observed] == [("drift-share", 0.0, 4000, None),
                                                                        ("kpi", 0.95, 0, None)]
