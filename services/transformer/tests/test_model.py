"""The transformer model end to end in-process, with mock transports for the feature server and predictor."""

import json

import httpx
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from flywheel_core import schema
from flywheel_transformer import DEBUG_FEATURES_HEADER, INFERENCE_ID_HEADER, FraudTransformer, load_settings
from flywheel_transformer._errors import FeaturesUnavailable, InvalidRequest, ModelNotLoaded, UnsupportedProtocol
from flywheel_transformer._events import EventAttributes, EventSink
from flywheel_transformer._features import FeatureClient
from flywheel_transformer._metrics import Metrics
from flywheel_transformer._predictor import PredictorClient
from flywheel_transformer._repo import load_spec

from conftest import (
    DEFAULTS,
    ONLINE_NAMES,
    feast_answer,
    feast_transport,
    known_values,
    predictor_transport,
    run,
    transaction,
)

JSON = {"content-type": "application/json"}


def answering(values_for=known_values, statuses=None):
    def handler(body):
        cards, merchants = body["entities"]["card_id"], body["entities"]["merchant_id"]
        return feast_answer(cards, merchants, values_for(len(cards)), statuses)

    return feast_transport(handler)


def failing(error):
    def handler(request):
        raise error

    return httpx.MockTransport(handler)


class Harness:
    def __init__(self, repo, features=None, predictor=None, events=None, **settings):
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.settings = load_settings(model_repo=repo, **settings)
        self.model = FraudTransformer(
            self.settings,
            self.metrics,
            FeatureClient("http://features", self.settings.features_timeout_s, transport=features or answering()),
            PredictorClient("http://predictor", "fraud", 1.0, transport=predictor or predictor_transport()),
            events,
        )
        self.model.use(load_spec(repo, "fraud"))

    def predict(self, *instances, headers=JSON):
        async def go():
            return await self.model({"instances": list(instances)}, dict(headers))

        return run(go())

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, {"model": "fraud", **labels}) or 0.0


def test_a_request_is_scored_thresholded_and_answered_in_v1_shape(repo):
    harness = Harness(
        repo, predictor=predictor_transport(lambda row: 0.9 if row[0] > 1.5 else 0.1, "v7"), threshold=0.5
    )
    body, headers = harness.predict(transaction(transaction_id="t1"), transaction(transaction_id="t2"))
    first, second = body["predictions"]
    assert first == {
        "id": "t1",
        "score": 0.1,
        "decision": "approve",
        "threshold": 0.5,
        "model_version": "v7",
        "missing_features": [],
        "degraded": False,
    }
    assert (second["id"], second["decision"]) == ("t2", "decline")  # row 2 has txn_count_1h = 2.0
    assert headers[INFERENCE_ID_HEADER] == body["inference_id"]
    assert harness.metric("flywheel_transformer_predictions_total", version="v7") == 2
    assert harness.metric("flywheel_transformer_declines_total", version="v7") == 1
    assert harness.metric("flywheel_transformer_requests_total") == 1


def test_the_threshold_comes_from_configuration(repo):
    harness = Harness(repo, predictor=predictor_transport(0.3), threshold=0.25)
    body, _ = harness.predict(transaction())
    assert body["predictions"][0]["decision"] == "decline"
    assert body["predictions"][0]["threshold"] == 0.25


def test_unknown_entities_take_training_defaults_are_listed_and_counted(repo):
    def values(n):
        out = known_values(n)
        out["txn_count_1h"] = [None] * n
        out["merchant_fraud_rate_30d"] = [0.5] + [None] * (n - 1)
        return out

    harness = Harness(repo, features=answering(values))
    body, _ = harness.predict(
        transaction(), transaction(transaction_id="t2"), headers={**JSON, DEBUG_FEATURES_HEADER: "1"}
    )
    first, second = body["predictions"]
    assert first["missing_features"] == ["txn_count_1h"]
    assert second["missing_features"] == ["txn_count_1h", "merchant_fraud_rate_30d"]
    assert second["features"]["txn_count_1h"] == DEFAULTS["txn_count_1h"]
    assert second["features"]["merchant_fraud_rate_30d"] == DEFAULTS["merchant_fraud_rate_30d"]
    assert first["degraded"] is False
    assert harness.metric("flywheel_transformer_missing_features_total", feature="txn_count_1h") == 2
    assert harness.metric("flywheel_transformer_missing_features_total", feature="merchant_fraud_rate_30d") == 1


def test_the_debug_header_returns_exactly_the_vector_sent_to_the_predictor(repo):
    sent = []

    def respond(request):
        sent.append(json.loads(request.content)["inputs"][0]["data"])
        return predictor_transport(0.5).handle_request(request)

    harness = Harness(repo, predictor=httpx.MockTransport(respond))
    body, _ = harness.predict(transaction(), headers={**JSON, DEBUG_FEATURES_HEADER: "true"})
    features = body["predictions"][0]["features"]
    assert list(features) == [c["name"] for c in schema.COLUMNS]
    assert list(features.values()) == sent[0]


def test_without_the_debug_header_no_features_are_returned(repo):
    body, _ = Harness(repo).predict(transaction())
    assert "features" not in body["predictions"][0]


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_feature_service_down_is_a_503_by_default_and_counted(repo, error):
    harness = Harness(repo, features=failing(error))
    with pytest.raises(FeaturesUnavailable) as caught:
        harness.predict(transaction())
    assert "feature service is unavailable" in str(caught.value)
    assert harness.metric("flywheel_transformer_feature_lookup_failures_total") == 1
    assert harness.metric("flywheel_transformer_failed_requests_total") == 1
    timeouts = harness.metric("flywheel_transformer_feature_lookup_timeouts_total")
    assert timeouts == (1 if isinstance(error, httpx.TimeoutException) else 0)


def test_with_fallback_defaults_a_feature_outage_scores_degraded_with_defaults(repo):
    harness = Harness(repo, features=failing(httpx.ReadTimeout("slow")), features_fallback="defaults")
    body, _ = harness.predict(
        transaction(), transaction(transaction_id="t2"), headers={**JSON, DEBUG_FEATURES_HEADER: "1"}
    )
    for prediction in body["predictions"]:
        assert prediction["degraded"] is True
        assert prediction["missing_features"] == ONLINE_NAMES
        assert all(prediction["features"][name] == DEFAULTS[name] for name in ONLINE_NAMES)
    assert harness.metric("flywheel_transformer_feature_fallbacks_total") == 2
    assert harness.metric("flywheel_transformer_feature_lookup_failures_total") == 1
    assert harness.metric("flywheel_transformer_missing_features_total", feature="txn_count_1h") == 0


def test_invalid_input_is_counted_and_never_reaches_the_feature_server(repo):
    calls = []
    harness = Harness(repo, features=feast_transport(lambda body: calls.append(body)))
    with pytest.raises(InvalidRequest):
        harness.predict(transaction(amount="12"))
    assert calls == []
    assert harness.metric("flywheel_transformer_invalid_requests_total") == 1


def test_v2_tensors_are_refused_with_the_v1_route_to_use(repo):
    harness = Harness(repo)
    request = InferRequest("fraud", [InferInput("amount", [1], "FP32", [1.0])])
    with pytest.raises(UnsupportedProtocol) as caught:
        run(harness.model(request, {}))
    assert "/v1/models/fraud:predict" in str(caught.value)


def test_before_metadata_is_loaded_the_model_is_not_ready_and_refuses(repo):
    harness = Harness(repo)
    harness.model.spec = None
    harness.model.ready = False
    assert harness.model.load() is False
    with pytest.raises(ModelNotLoaded):
        harness.predict(transaction())


def test_a_scored_request_queues_one_record_with_v2_shaped_payloads(repo):
    posted = []

    def sink(request):
        posted.append((dict(request.headers), json.loads(request.content)))
        return httpx.Response(200)

    async def go(harness):
        body, _ = await harness.model({"instances": [transaction(), transaction(transaction_id="t2")]}, dict(JSON))
        await harness.model.events.drain()
        await harness.model.events.aclose()
        return body

    registry = CollectorRegistry()
    events = EventSink(
        "http://sink/",
        EventAttributes("urn:t", "ns", "fraud", "default"),
        Metrics(registry),
        "fraud",
        10,
        1.0,
        transport=httpx.MockTransport(sink),
    )
    harness = Harness(repo, events=events, predictor=predictor_transport(0.8, "v4"))
    body = run(go(harness))
    (req_headers, request), (resp_headers, response) = posted
    assert req_headers["ce-id"] == resp_headers["ce-id"] == body["inference_id"]
    assert req_headers["ce-type"].endswith("request") and resp_headers["ce-type"].endswith("response")
    tensor, ids = request["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("input", "FP32", [2, schema.INPUT_DIM])
    assert ids == {"name": "transaction_id", "shape": [2], "datatype": "BYTES", "data": ["t0000000001", "t2"]}
    assert request["parameters"] == {"degraded": False, "metadata_version": "v1"}
    assert response["model_version"] == "v4"
    assert response["outputs"][0] == {"name": "probability", "shape": [2, 1], "datatype": "FP32", "data": [0.8, 0.8]}
    assert response["outputs"][1]["data"] == ["decline", "decline"]
