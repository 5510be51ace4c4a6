"""The transformer model end to end in-process, with mock transports for the feature server and predictor."""

import json

import httpx
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from flywheel_contracts.auth import write_token
from flywheel_core import schema
from flywheel_transformer import (
    DEBUG_FEATURES_HEADER,
    DECISIONS_HEADER,
    INFERENCE_ID_HEADER,
    MODEL_VERSION_HEADER,
    SCORES_HEADER,
    FraudTransformer,
    load_settings,
)
from flywheel_transformer._errors import (
    FeaturesUnavailable,
    InternalFailure,
    InvalidHeader,
    InvalidRequest,
    ModelNotLoaded,
    RequestError,
    Unauthorized,
    UnsupportedProtocol,
    VersionNotPublished,
    VersionNotServed,
    error_body,
    status_of,
)
from flywheel_transformer._events import EventAttributes, EventSink
from flywheel_transformer._features import FeatureClient
from flywheel_transformer._metrics import Metrics
from flywheel_transformer._predictor import PredictorClient
from flywheel_transformer._repo import load_spec

from conftest import (
    DEFAULTS,
    ONLINE_NAMES,
    V2_DEFAULTS,
    feast_answer,
    feast_transport,
    known_values,
    predictor_transport,
    run,
    transaction,
    versioned_predictor_transport,
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


DEBUG_TOKEN = "test-debug-token"
DEBUG = {**JSON, DEBUG_FEATURES_HEADER: "1", "authorization": f"Bearer {DEBUG_TOKEN}"}
"""Headers asking for the model input, with the debug token of a `Harness(debug=True)`."""


class Harness:
    def __init__(self, repo, features=None, predictor=None, events=None, debug=False, **settings):
        """`debug`: DEBUG_FEATURES on with DEBUG_TOKEN as the debug token (send DEBUG headers)."""
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        if debug:
            token = repo.parent / "transformer-debug"
            token.write_text(DEBUG_TOKEN + "\n")
            settings.update(debug_features=True, debug_token_file=token)
        self.settings = load_settings(model_repo=repo, **settings)
        self.model = FraudTransformer(
            self.settings,
            self.metrics,
            FeatureClient("http://features", self.settings.features_timeout_s, transport=features or answering()),
            PredictorClient("http://predictor", "fraud", 1.0, transport=predictor or predictor_transport()),
            events,
        )
        self.model.use(load_spec(repo, "fraud", self.settings.model_version))

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
        "missing_reasons": {},
        "unknown_entities": [],
        "degraded": False,
        "unseen": [],
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

    harness = Harness(repo, features=answering(values), debug=True)
    body, _ = harness.predict(transaction(), transaction(transaction_id="t2"), headers=DEBUG)
    first, second = body["predictions"]
    assert first["missing_features"] == ["txn_count_1h"]
    assert second["missing_features"] == ["txn_count_1h", "merchant_fraud_rate_30d"]
    assert second["features"]["txn_count_1h"] == DEFAULTS["txn_count_1h"]
    assert second["features"]["merchant_fraud_rate_30d"] == DEFAULTS["merchant_fraud_rate_30d"]
    assert first["degraded"] is False
    assert first["missing_reasons"] == {"txn_count_1h": "not_found"}
    assert second["missing_reasons"] == {"txn_count_1h": "not_found", "merchant_fraud_rate_30d": "not_found"}
    assert first["unknown_entities"] == second["unknown_entities"] == []  # the store has rows for both
    assert harness.metric("flywheel_transformer_missing_features_total", feature="txn_count_1h") == 2
    assert harness.metric("flywheel_transformer_missing_features_total", feature="merchant_fraud_rate_30d") == 1


def test_a_card_and_merchant_unknown_to_the_store_are_named_and_not_degraded(repo):
    # The case: all eight online features missing while the feature service answered fine.
    def nothing_known(n):
        return {name: [None] * n for name in ONLINE_NAMES}

    harness = Harness(repo, features=answering(nothing_known))
    body, _ = harness.predict(transaction(card_id="c-new", merchant_id="m-new"))
    [prediction] = body["predictions"]
    assert prediction["missing_features"] == ONLINE_NAMES
    assert prediction["missing_reasons"] == dict.fromkeys(ONLINE_NAMES, "not_found")
    assert prediction["unknown_entities"] == ["card", "merchant"]
    assert prediction["degraded"] is False  # the feature service worked: a new card is not an outage
    assert harness.metric("flywheel_transformer_unknown_entities_total", entity="card") == 1
    assert harness.metric("flywheel_transformer_unknown_entities_total", entity="merchant") == 1
    assert harness.metric("flywheel_transformer_feature_fallbacks_total") == 0


def test_only_the_unknown_entity_is_named_when_the_other_is_known(repo):
    def card_unknown(n):
        values = known_values(n)
        values.update({name: [None] * n for name in schema.CARD_FEATURES})
        return values

    body, _ = Harness(repo, features=answering(card_unknown)).predict(transaction(card_id="c-new"))
    [prediction] = body["predictions"]
    assert prediction["unknown_entities"] == ["card"]
    assert prediction["missing_features"] == list(schema.CARD_FEATURES)
    assert prediction["degraded"] is False


def test_stale_features_are_missing_as_outside_max_age_not_as_an_unknown_entity(repo):
    statuses = {name: ["OUTSIDE_MAX_AGE"] for name in schema.MERCHANT_FEATURES}
    body, _ = Harness(repo, features=answering(statuses=statuses)).predict(transaction())
    [prediction] = body["predictions"]
    assert prediction["missing_reasons"] == dict.fromkeys(schema.MERCHANT_FEATURES, "outside_max_age")
    assert prediction["unknown_entities"] == []
    assert prediction["degraded"] is False


@pytest.fixture
def debug_token(tmp_path):
    return write_token(tmp_path / "transformer-debug")


def bearer(path):
    return {"authorization": f"Bearer {path.read_text().strip()}"}


def test_the_debug_header_with_the_token_returns_exactly_the_vector_sent_to_the_predictor(repo, debug_token):
    sent = []

    def respond(request):
        sent.append(json.loads(request.content)["inputs"][0]["data"])
        return predictor_transport(0.5).handle_request(request)

    harness = Harness(repo, predictor=httpx.MockTransport(respond), debug_features=True, debug_token_file=debug_token)
    body, _ = harness.predict(transaction(), headers={**JSON, DEBUG_FEATURES_HEADER: "true", **bearer(debug_token)})
    features = body["predictions"][0]["features"]
    assert list(features) == [c["name"] for c in schema.COLUMNS]
    assert list(features.values()) == sent[0]


def test_without_the_debug_header_no_features_are_returned(repo, debug_token):
    harness = Harness(repo, debug_features=True, debug_token_file=debug_token)
    body, _ = harness.predict(transaction(), headers={**JSON, **bearer(debug_token)})
    assert "features" not in body["predictions"][0]


def test_with_debug_features_off_the_header_is_ignored_even_with_the_token(repo, debug_token):
    harness = Harness(repo, debug_token_file=debug_token)  # DEBUG_FEATURES defaults to off
    body, _ = harness.predict(transaction(), headers={**JSON, DEBUG_FEATURES_HEADER: "1", **bearer(debug_token)})
    assert "features" not in body["predictions"][0]


@pytest.mark.parametrize(
    ("authorization", "words"),
    [
        (None, "send Authorization: Bearer"),
        ("Bearer not-the-token", "wrong token"),
        ("Basic abc", "send Authorization"),
    ],
)
def test_the_debug_header_without_the_token_is_a_401_before_any_lookup(repo, debug_token, authorization, words):
    looked_up = []
    features = answering()

    def handle(request):
        looked_up.append(request)
        return features.handle_request(request)

    harness = Harness(repo, features=httpx.MockTransport(handle), debug_features=True, debug_token_file=debug_token)
    headers = {**JSON, DEBUG_FEATURES_HEADER: "1", **({"authorization": authorization} if authorization else {})}
    with pytest.raises(Unauthorized) as caught:
        harness.predict(transaction(), headers=headers)
    assert status_of(caught.value) == 401
    assert error_body(caught.value)["code"] == "unauthorized"
    assert words in str(caught.value) and "transformer debug token" in str(caught.value)
    assert looked_up == []


def test_debug_features_on_without_a_token_file_gives_features_to_nobody(repo):
    harness = Harness(repo, debug_features=True)
    with pytest.raises(Unauthorized, match="FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE"):
        harness.predict(transaction(), headers={**JSON, DEBUG_FEATURES_HEADER: "1", "authorization": "Bearer x"})


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
    harness = Harness(repo, features=failing(httpx.ReadTimeout("slow")), features_fallback="defaults", debug=True)
    body, _ = harness.predict(transaction(), transaction(transaction_id="t2"), headers=DEBUG)
    for prediction in body["predictions"]:
        assert prediction["degraded"] is True
        assert prediction["missing_features"] == ONLINE_NAMES
        assert prediction["missing_reasons"] == dict.fromkeys(ONLINE_NAMES, "lookup_failed")
        assert prediction["unknown_entities"] == []  # nothing is known about the card or merchant
        assert all(prediction["features"][name] == DEFAULTS[name] for name in ONLINE_NAMES)
    assert harness.metric("flywheel_transformer_feature_fallbacks_total") == 2
    assert harness.metric("flywheel_transformer_feature_lookup_failures_total") == 1
    assert harness.metric("flywheel_transformer_missing_features_total", feature="txn_count_1h") == 0
    assert harness.metric("flywheel_transformer_unknown_entities_total", entity="card") == 0


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
        mode="binary",  # one post per event: the test reads each event's headers and body
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


# Model versions named by a router: x-flywheel-model-version


def versioned(repo, paths, **kwargs):
    """Harness over `two_versions` serving v1 by default, with a predictor that serves v1 and v2."""
    kwargs.setdefault("predictor", versioned_predictor_transport(paths=paths))
    unknown = answering(lambda n: {name: [None] * n for name in ONLINE_NAMES})  # every online feature defaulted
    return Harness(repo, model_version="v1", features=unknown, debug=True, **kwargs)


def test_a_named_version_is_scored_at_its_versioned_path_with_its_own_defaults(two_versions):
    paths = []
    harness = versioned(two_versions, paths)
    body, headers = harness.predict(transaction(), headers={**DEBUG, MODEL_VERSION_HEADER: "v2"})
    (prediction,) = body["predictions"]
    assert paths == ["/v2/models/fraud/versions/v2/infer"]
    assert all(prediction["features"][name] == V2_DEFAULTS[name] for name in ONLINE_NAMES)
    assert prediction["model_version"] == "v2"
    assert headers[MODEL_VERSION_HEADER] == "v2"
    assert harness.metric("flywheel_transformer_predictions_total", version="v2") == 1


@pytest.mark.parametrize("header", [{}, {MODEL_VERSION_HEADER: ""}])
def test_without_a_version_header_the_default_version_and_the_unversioned_path_serve(two_versions, header):
    paths = []
    harness = versioned(two_versions, paths)
    body, headers = harness.predict(transaction(), headers={**DEBUG, **header})
    (prediction,) = body["predictions"]
    assert paths == ["/v2/models/fraud/infer"]
    assert all(prediction["features"][name] == DEFAULTS[name] for name in ONLINE_NAMES)
    assert prediction["model_version"] == headers[MODEL_VERSION_HEADER] == "v1"


def test_a_malformed_version_header_is_a_400_before_any_lookup(two_versions):
    paths, lookups = [], []
    harness = Harness(
        two_versions,
        features=feast_transport(lambda body: lookups.append(body)),
        predictor=versioned_predictor_transport(paths=paths),
    )
    with pytest.raises(InvalidHeader) as caught:
        harness.predict(transaction(), headers={**JSON, MODEL_VERSION_HEADER: "2"})
    assert error_body(caught.value)["header"] == MODEL_VERSION_HEADER
    assert (paths, lookups) == ([], [])
    assert harness.metric("flywheel_transformer_invalid_requests_total") == 1


def test_an_unpublished_version_is_a_404_naming_it_and_what_is_published(two_versions):
    paths = []
    harness = versioned(two_versions, paths)
    with pytest.raises(VersionNotPublished) as caught:
        harness.predict(transaction(), headers={**JSON, MODEL_VERSION_HEADER: "v9"})
    assert status_of(caught.value) == 404
    assert error_body(caught.value)["published"] == ["v1", "v2"]
    assert paths == []
    assert harness.metric("flywheel_transformer_invalid_requests_total") == 1


def test_a_predictor_404_for_the_named_version_is_a_404_not_a_502(two_versions):
    paths = []
    harness = versioned(two_versions, paths, predictor=versioned_predictor_transport(served=("v1",), paths=paths))
    with pytest.raises(VersionNotServed) as caught:
        harness.predict(transaction(), headers={**JSON, MODEL_VERSION_HEADER: "v2"})
    assert status_of(caught.value) == 404
    assert error_body(caught.value)["version"] == "v2"
    assert harness.metric("flywheel_transformer_predictor_errors_total") == 1


def test_response_headers_carry_the_version_scores_and_decisions_in_instance_order(two_versions):
    # row i has txn_count_1h = 1 + i, so the scores rise from 0.2234567 and the last two decline
    harness = Harness(two_versions, model_version="v1", predictor=predictor_transport(lambda r: r[0] / 10 + 0.1234567))
    body, headers = harness.predict(*[transaction(transaction_id=f"t{i}") for i in range(5)])
    scores = [p["score"] for p in body["predictions"]]
    assert headers[SCORES_HEADER] == ",".join(format(p, ".6g") for p in scores)
    assert [float(v) for v in headers[SCORES_HEADER].split(",")] == pytest.approx(scores, rel=1e-5)
    assert headers[DECISIONS_HEADER].split(",") == [p["decision"] for p in body["predictions"]]
    assert headers[DECISIONS_HEADER] == "approve,approve,approve,decline,decline"
    assert headers[MODEL_VERSION_HEADER] == "v1"
    assert headers[INFERENCE_ID_HEADER] == body["inference_id"]


def test_more_than_256_instances_get_no_score_or_decision_headers(two_versions):
    harness = Harness(two_versions, model_version="v1", predictor=versioned_predictor_transport())
    many = [transaction(transaction_id=f"t{i}") for i in range(257)]
    body, headers = harness.predict(*many, headers={**JSON, MODEL_VERSION_HEADER: "v2"})
    assert len(body["predictions"]) == 257
    assert SCORES_HEADER not in headers and DECISIONS_HEADER not in headers
    assert headers[MODEL_VERSION_HEADER] == "v2"
    _, headers = harness.predict(*many[:256])
    assert len(headers[SCORES_HEADER].split(",")) == len(headers[DECISIONS_HEADER].split(",")) == 256


def test_a_named_version_is_read_from_the_repository_once(two_versions):
    harness = versioned(two_versions, [])
    for _ in range(3):
        harness.predict(transaction(), headers={**JSON, MODEL_VERSION_HEADER: "v2"})
    harness.predict(transaction(), headers={**JSON, MODEL_VERSION_HEADER: "v1"})  # the default: loaded at start
    assert harness.model.specs.loads == 1


def test_a_free_form_version_from_the_predictor_is_no_metric_label_or_header(repo):
    harness = Harness(repo, predictor=predictor_transport(0.7, "build 7\n"))
    body, headers = harness.predict(transaction())
    assert body["predictions"][0]["model_version"] == "build 7\n"
    assert MODEL_VERSION_HEADER not in headers
    assert harness.metric("flywheel_transformer_predictions_total", version="unknown") == 1


def test_the_events_of_a_named_version_carry_it_in_headers_and_bodies(two_versions):
    posted = []

    def sink(request):
        posted.append((dict(request.headers), json.loads(request.content)))
        return httpx.Response(200)

    async def go(harness):
        await harness.model({"instances": [transaction()]}, {**JSON, MODEL_VERSION_HEADER: "v2"})
        await harness.model({"instances": [transaction()]}, dict(JSON))
        await harness.model.events.drain()
        await harness.model.events.aclose()

    events = EventSink(
        "http://sink/",
        EventAttributes("urn:t", "ns", "fraud", "default"),
        Metrics(CollectorRegistry()),
        "fraud",
        10,
        1.0,
        senders=1,
        transport=httpx.MockTransport(sink),
        mode="binary",  # one post per event: the test reads each event's headers and body
    )
    harness = versioned(two_versions, [], events=events)
    run(go(harness))
    (h1, request), (h2, response), (h3, default_request), (h4, default_response) = posted
    assert h1["ce-modelversion"] == h2["ce-modelversion"] == "v2"
    assert request["parameters"]["metadata_version"] == "v2"  # what drift reads from a request event
    assert response["model_version"] == "v2"  # ... and from a response event (it wins)
    assert h3["ce-modelversion"] == h4["ce-modelversion"] == "v1"
    assert default_request["parameters"]["metadata_version"] == default_response["model_version"] == "v1"


def test_close_drains_the_inference_log_and_closes_every_http_client(repo, caplog):
    posted = []

    def sink(request):
        posted.append(request.headers["ce-id"])
        return httpx.Response(202)

    events = EventSink(
        "http://sink/",
        EventAttributes("urn:t", "ns", "fraud", "default"),
        Metrics(CollectorRegistry()),
        "fraud",
        10,
        1.0,
        transport=httpx.MockTransport(sink),
        mode="binary",  # one post per event: the test reads each event's headers and body
    )
    harness = Harness(repo, events=events)

    async def go():
        body, _ = await harness.model({"instances": [transaction()]}, dict(JSON))
        await harness.model.close()
        return body["inference_id"]

    with caplog.at_level("INFO", logger="flywheel_transformer"):
        inference_id = run(go())
    assert posted == [inference_id, inference_id]
    clients = (harness.model.features._client, harness.model.predictor._client, events._client)
    assert all(client.is_closed for client in clients)
    assert "2 events sent, 0 failed, 0 events could not be sent" in caplog.text


def test_a_bug_inside_a_request_is_a_500_with_a_generic_body_and_one_logged_traceback(repo, caplog):
    harness = Harness(repo, features=failing(RuntimeError("secret detail from a bug")))
    with pytest.raises(InternalFailure) as caught:
        harness.predict(transaction())
    assert status_of(caught.value) == 500  # was a guess: an unmapped error was answered 502 or left to KServe
    assert error_body(caught.value) == {
        "error": "internal error: the service logged the details",
        "code": "internal",
        "type": "internal",
    }
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError]
    assert harness.metric("flywheel_transformer_failed_requests_total") == 1


def test_an_unmapped_request_error_is_a_500_not_a_guessed_502():
    assert status_of(RequestError("a request error without a status")) == 500
