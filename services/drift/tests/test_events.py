import json

import numpy as np
import pytest

from flywheel_drift import InvalidEvent
from flywheel_drift._errors import UnsupportedEventType, UnsupportedMediaType
from flywheel_drift._events import parse_cloudevent
from flywheel_drift._pairing import Pairer

KSERVE = {"ce-specversion": "1.0", "ce-id": "id-1", "ce-source": "urn:x", "content-type": "application/json",
          "ce-inferenceservicename": "fraud", "ce-time": "2026-11-23T00:00:01.5Z"}


def kserve(role: str, **extra: str) -> dict[str, str]:
    return {**KSERVE, "ce-type": f"org.kubeflow.serving.inference.{role}", **extra}


def transformer_request(n: int = 2) -> bytes:
    """Exactly what services/transformer posts (V2 input tensor + transaction ids)."""
    return json.dumps({"id": "id-1", "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [n, 19], "data": [float(i) for i in range(19 * n)]},
        {"name": "transaction_id", "datatype": "BYTES", "shape": [n], "data": [f"t{i}" for i in range(n)]}],
        "parameters": {"degraded": False, "metadata_version": "v1"}}).encode()


def transformer_response(n: int = 2) -> bytes:
    return json.dumps({"model_name": "fraud", "model_version": "v1", "id": "id-1", "parameters": {"threshold": 0.5},
                       "outputs": [{"name": "probability", "shape": [n, 1], "datatype": "FP32", "data": [0.1] * n},
                                   {"name": "decision", "shape": [n], "datatype": "BYTES", "data": ["approve"] * n},
                                   {"name": "transaction_id", "shape": [n], "datatype": "BYTES",
                                    "data": [f"t{i}" for i in range(n)]}]}).encode()


def test_transformer_events_pair_into_one_record_with_ids_and_version():
    pairer = Pairer(10, 60)
    request = parse_cloudevent(kserve("request"), transformer_request(), 0.0)
    response = parse_cloudevent(kserve("response"), transformer_response(), 0.0)
    assert request.x.shape == (2, 19) and request.x[1, 0] == 19.0
    assert pairer.add(response) == []  # either order
    (record,) = pairer.add(request)
    assert (record.model, record.version, record.keys) == ("fraud", "v1", ["t0", "t1"])
    assert record.time == pytest.approx(1795392001.5)
    assert np.allclose(record.probabilities, 0.1)


def test_kserve_v1_and_seldon_bodies_are_read_unchanged():
    v1 = parse_cloudevent(kserve("request"), b'{"instances": [[1, 2, 3], [4, 5, 6]]}', 0.0)
    assert v1.x.shape == (2, 3)
    seldon = {**KSERVE, "ce-type": "io.seldon.serving.inference.response"}
    proba = parse_cloudevent(seldon, b'{"data": {"names": ["p0", "p1"], "ndarray": [[0.9, 0.1], [0.2, 0.8]]}}', 0.0)
    assert np.allclose(proba.probabilities, [0.1, 0.8])  # column 1 of predict_proba
    tensor = parse_cloudevent({**seldon, "ce-type": "io.seldon.serving.inference.request"},
                              b'{"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}}', 0.0)
    assert tensor.x.tolist() == [[1.0, 2.0, 3.0]]


def test_structured_mode_is_accepted_too():
    body = json.dumps({"specversion": "1.0", "id": "s1", "source": "x",
                       "type": "org.kubeflow.serving.inference.request", "data": {"instances": [[1.0, 2.0]]}}).encode()
    half = parse_cloudevent({"content-type": "application/cloudevents+json"}, body, 0.0)
    assert half.id == "s1" and half.x.shape == (1, 2)


@pytest.mark.parametrize(("headers", "body", "field"), [
    ({**KSERVE, "ce-id": ""}, b"{}", "ce-id"),
    ({k: v for k, v in kserve("request").items() if k != "ce-specversion"}, b"{}", "ce-specversion"),
    (kserve("request"), b"{not json", "body"),
    (kserve("request"), b'{"inputs": [{"name": "input", "shape": [2, 3], "data": [1, 2]}]}', "inputs.input.data"),
    (kserve("request"), b'{"instances": [[1, 2], [3]]}', "instances"),
    (kserve("request"), b'{"instances": [["a", "b"]]}', "instances"),
    (kserve("response"), b'{"outputs": [{"name": "probability", "data": [[0.1, 0.2, 0.7]]}]}', "outputs"),
    (kserve("request", **{"ce-time": "yesterday"}), b'{"instances": [[1]]}', "ce-time"),
    (kserve("request"), b'{"something": 1}', "body"),
])
def test_malformed_events_name_the_problem(headers, body, field):
    with pytest.raises(InvalidEvent) as caught:
        parse_cloudevent(headers, body, 0.0)
    assert caught.value.field == field


def test_other_event_types_and_media_types_are_refused():
    with pytest.raises(UnsupportedEventType):
        parse_cloudevent({**KSERVE, "ce-type": "com.example.order"}, b"{}", 0.0)
    with pytest.raises(UnsupportedMediaType):
        parse_cloudevent({**kserve("request"), "content-type": "text/plain"}, b"x", 0.0)


def test_a_request_whose_response_never_comes_still_counts_features():
    pairer = Pairer(10, timeout_s=5)
    pairer.add(parse_cloudevent(kserve("request"), transformer_request(1), 0.0))
    later = parse_cloudevent(kserve("request", **{"ce-id": "id-2", "ce-time": "2026-11-23T00:01:00Z"}),
                             transformer_request(1), 0.0)
    pairer.add(later)
    (record,) = pairer.expire(later.time)
    assert record.inference_id == "id-1" and record.probabilities is None and pairer.unpaired == 1


def test_the_pending_bound_drops_the_oldest_and_counts_it():
    pairer = Pairer(max_pending=2, timeout_s=60)
    for i in range(3):
        pairer.add(parse_cloudevent(kserve("response", **{"ce-id": f"r{i}"}), transformer_response(1), 0.0))
    assert len(pairer.pending) == 2 and pairer.unpaired == 1
