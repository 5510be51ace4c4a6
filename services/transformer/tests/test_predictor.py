import json

import httpx
import pytest

from flywheel_transformer._errors import (
    PredictorBadResponse,
    PredictorUnavailable,
    VersionNotServed,
    error_body,
    status_of,
)
from flywheel_transformer._predictor import PredictorClient, infer_body, parse_infer

from conftest import predictor_transport, run, versioned_predictor_transport


def test_the_batch_is_one_flat_row_major_fp32_tensor_named_by_the_metadata():
    body = infer_body("abc", "input", [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert body == {
        "id": "abc",
        "inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}],
    }


@pytest.mark.parametrize("data", [[0.1, 0.9], [[0.1], [0.9]]])
def test_scores_are_read_flat_or_nested_with_the_reported_model_version(data):
    body = {
        "model_name": "fraud",
        "model_version": "v3",
        "outputs": [{"name": "probability", "shape": [2, 1], "datatype": "FP32", "data": data}],
    }
    scores = parse_infer(body, "probability", 2)
    assert scores.probabilities == [0.1, 0.9]
    assert scores.model_version == "v3"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"outputs": []}, "lacks"),
        ({"outputs": [{"name": "probability", "data": [0.1]}]}, "1 scores for 2 instances"),
        ({"outputs": [{"name": "probability", "data": ["x", 0.2]}]}, "non-numeric"),
        ({"error": "boom"}, "lacks"),
    ],
)
def test_an_unusable_predictor_answer_is_a_502(body, words):
    with pytest.raises(PredictorBadResponse) as caught:
        parse_infer(body, "probability", 2)
    assert status_of(caught.value) == 502
    assert words in str(caught.value)


def infer_with(transport):
    async def go():
        client = PredictorClient("http://predictor", "fraud", 0.5, transport=transport)
        try:
            return await client.infer(infer_body("id1", "input", [[0.0] * 19]), "probability", 1)
        finally:
            await client.aclose()

    return run(go())


def test_the_client_calls_v2_infer_for_the_model():
    paths = []

    def respond(request):
        paths.append((request.method, request.url.path, json.loads(request.content)["id"]))
        return predictor_transport(0.7, "v2").handle_request(request)

    scores = infer_with(httpx.MockTransport(respond))
    assert paths == [("POST", "/v2/models/fraud/infer", "id1")]
    assert scores.probabilities == [0.7]
    assert scores.model_version == "v2"


@pytest.mark.parametrize(
    ("respond", "error", "status"),
    [
        (lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), PredictorUnavailable, 503),
        (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")), PredictorUnavailable, 503),
        (lambda r: httpx.Response(503, json={"error": "not ready"}), PredictorUnavailable, 503),
        (lambda r: httpx.Response(400, json={"error": "shape mismatch"}), PredictorBadResponse, 502),
        (lambda r: httpx.Response(200, text="<html>"), PredictorBadResponse, 502),
    ],
)
def test_predictor_failures_map_to_503_or_502_never_500(respond, error, status):
    with pytest.raises(error) as caught:
        infer_with(httpx.MockTransport(respond))
    assert status_of(caught.value) == status


def infer_version(transport, version):
    async def go():
        client = PredictorClient("http://predictor", "fraud", 0.5, transport=transport)
        try:
            return await client.infer(infer_body("id1", "input", [[0.0] * 19]), "probability", 1, version=version)
        finally:
            await client.aclose()

    return run(go())


def test_a_named_version_is_scored_at_its_versioned_v2_path():
    paths = []
    scores = infer_version(versioned_predictor_transport(paths=paths), "v2")
    assert paths == ["/v2/models/fraud/versions/v2/infer"]
    assert scores.model_version == "v2"


def test_a_predictor_404_for_a_named_version_is_a_404_naming_it():
    with pytest.raises(VersionNotServed) as caught:
        infer_version(versioned_predictor_transport(served=("v1",)), "v3")
    assert status_of(caught.value) == 404
    assert error_body(caught.value)["version"] == "v3"
    assert "'v3'" in str(caught.value) and "/v2/models/fraud/versions/v3/infer" in str(caught.value)


def test_a_predictor_404_without_a_named_version_stays_a_502():
    with pytest.raises(PredictorBadResponse):
        infer_with(httpx.MockTransport(lambda r: httpx.Response(404, json={"error": "no model fraud"})))


def test_an_answer_from_another_version_than_the_one_named_is_a_502():
    with pytest.raises(PredictorBadResponse) as caught:
        infer_version(predictor_transport(0.4, "v1"), "v2")
    assert "'v1'" in str(caught.value) and "'v2'" in str(caught.value)


def test_the_version_comes_from_the_body_else_the_response_header_else_the_path_asked():
    def answer(header):
        def respond(request):
            response = predictor_transport(0.4, None).handle_request(request)
            headers = {"x-flywheel-model-version": header} if header else {}
            return httpx.Response(200, json=json.loads(response.read()), headers=headers)

        return httpx.MockTransport(respond)

    assert infer_version(answer("v2"), None).model_version == "v2"
    assert infer_version(answer(None), "v5").model_version == "v5"
    assert infer_version(answer(None), None).model_version is None


@pytest.mark.parametrize("status", [500, 503])
def test_the_callers_message_names_neither_the_address_nor_the_reply_and_the_log_has_both_once(caplog, status):
    transport = httpx.MockTransport(lambda r: httpx.Response(status, text="trace at /srv/predictor/internal.py"))

    async def go():
        client = PredictorClient("http://predictor.internal:8080", "fraud", 0.5, transport=transport)
        errors = []
        for _ in range(3):
            with pytest.raises((PredictorBadResponse, PredictorUnavailable)) as caught:
                await client.infer(infer_body("id1", "input", [[0.0] * 19]), "probability", 1)
            errors.append(str(caught.value))
        await client.aclose()
        return errors

    with caplog.at_level("INFO", logger="flywheel_transformer.predictor"):
        errors = run(go())
    for error in errors:
        assert "predictor.internal" not in error and "/srv/predictor" not in error
    lines = [r.getMessage() for r in caplog.records if r.name == "flywheel_transformer.predictor"]
    assert len(lines) == 1
    assert "predictor.internal:8080" in lines[0] and "/srv/predictor/internal.py" in lines[0]
