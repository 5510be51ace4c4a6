"""PromQL metrics: placeholders filled, an instant query at the interval's end, exactly one finite number or a
clear error (Prometheus' own error text included).

`FakePrometheus` answers `GET /api/v1/query` with the HTTP API's JSON envelopes (success with a vector or
scalar, error with errorType/error and a 4xx), from a table of query text -> result.
"""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from flywheel_contracts import MetricSpec, ModelRollout
from flywheel_controller._provider_prometheus import PrometheusProvider

pytestmark = pytest.mark.anyio
URL = "http://prometheus.test:9090"
NOW = datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)
ERRORS = 'sum(rate(http_errors_total{model="{{model}}",version="{{version}}"}[5m]))'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def vector(*values: str) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"instance": f"i{i}"}, "value": [NOW.timestamp(), v]} for i, v in enumerate(values)]}}


class FakePrometheus:
    def __init__(self, answers: dict[str, dict | httpx.Response]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/api/v1/query"
        answer = self.answers.get(request.url.params["query"])
        if answer is None:
            return httpx.Response(200, json=vector())
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    @property
    def queries(self) -> list[str]:
        return [r.url.params["query"] for r in self.requests]


def rollout(stable: str | None = "v1") -> ModelRollout:
    return ModelRollout.model_validate({
        "name": "fraud-v2",
        "spec": {"model": "fraud", "candidate": {"version": "v2"},
                 "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}]}}},
        "status": {"stableVersion": stable} if stable else {},
    })


def metric(query: str = ERRORS, relative: bool = False) -> MetricSpec:
    return MetricSpec(name="errors", provider="prometheus", query=query, max=1.0, relativeToStable=relative)


async def measure(prometheus, *metrics: MetricSpec, r: ModelRollout | None = None):
    provider = PrometheusProvider(URL + "/", transport=httpx.MockTransport(prometheus))
    return await provider.measure(r or rollout(), list(metrics), None, NOW)


async def test_a_one_sample_vector_is_the_value_of_the_query_with_its_placeholders_filled() -> None:
    candidate = 'sum(rate(http_errors_total{model="fraud",version="v2"}[5m]))'
    prometheus = FakePrometheus({candidate: vector("0.125")})
    [o] = await measure(prometheus, metric())
    assert (o.name, o.kind, o.value, o.stable_value, o.error) == ("errors", "value", 0.125, None, None)
    [request] = prometheus.requests
    assert str(request.url).startswith(f"{URL}/api/v1/query?")
    assert request.url.params["query"] == candidate and float(request.url.params["time"]) == NOW.timestamp()


async def test_a_scalar_is_a_value_too() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [NOW.timestamp(), "42"]}}
    [o] = await measure(FakePrometheus({"scalar(up)": scalar}), metric("scalar(up)"))
    assert o.value == 42.0


async def test_relative_to_stable_runs_the_query_again_for_the_stable_version() -> None:
    prometheus = FakePrometheus({'errors{version="v2"}': vector("0.3"), 'errors{version="v1"}': vector("0.1")})
    [o] = await measure(prometheus, metric('errors{version="{{version}}"}', relative=True))
    assert (o.value, o.stable_value) == (0.3, 0.1)
    assert prometheus.queries == ['errors{version="v2"}', 'errors{version="v1"}']


async def test_the_stable_placeholder_names_the_stable_version() -> None:
    ratio = 'a{version="v2"} / a{version="v1"}'
    prometheus = FakePrometheus({ratio: vector("1.5")})
    [o] = await measure(prometheus, metric('a{version="{{version}}"} / a{version="{{stable}}"}'))
    assert o.value == 1.5
    [o] = await measure(prometheus, metric('a{version="{{stable}}"}'), r=rollout(None))
    assert o.error == "the query needs the stable version and this rollout has none yet"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (vector(), "query returned no sample: q"),
        (vector("1", "2"), "query returned 2 samples, expected one (aggregate it, e.g. sum(...)): q"),
        (vector("NaN"), "query returned NaN, not a finite number: q"),
        (vector("+Inf"), "query returned +Inf, not a finite number: q"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "query returned a matrix, expected one"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}, "query returned a malformed sample None"),
        (httpx.Response(400, json={"status": "error", "errorType": "bad_data",
                                   "error": 'invalid parameter "query": 1:5: parse error'}),
         'Prometheus refused the query (bad_data): invalid parameter "query": 1:5: parse error; query: q'),
        (httpx.Response(502, text="<html>Bad Gateway</html>"),
         "Prometheus answered 502 with something that is not a query result: <html>Bad Gateway</html>"),
    ],
)
async def test_anything_but_one_finite_number_is_an_error(answer, error) -> None:
    [o] = await measure(FakePrometheus({"q": answer}), metric("q"))
    assert o.value is None and o.error.startswith(error)


async def test_an_unreachable_prometheus_is_named() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    [o] = await measure(down, metric())
    assert o.error == f"cannot reach Prometheus at {URL}: ConnectTimeout: timed out"


async def test_metrics_are_queried_each_with_its_own_result() -> None:
    prometheus = FakePrometheus({"a": vector("1"), "b": vector("2")})
    a = MetricSpec(name="a", provider="prometheus", query="a", max=5)
    b = MetricSpec(name="b", provider="prometheus", query="b", min=1)
    observed = await measure(prometheus, a, b)
    assert [(o.name, o.value) for o in observed] == [("a", 1.0), ("b", 2.0)]


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="Prometheus URL"):
        PrometheusProvider("prometheus:9090")
