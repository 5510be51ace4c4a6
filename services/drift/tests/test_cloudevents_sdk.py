"""The hand parser reads what the CloudEvents SDK (cloudevents 2.x, a test-only dependency) sends, in both
HTTP modes: structured with `data` or `data_base64`, and binary with percent-encoded attribute headers."""

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from flywheel_drift import InvalidEvent
from flywheel_drift._errors import UnsupportedMediaType
from flywheel_drift._events import parse_cloudevent

from test_events import transformer_request, transformer_response

AT = datetime(2026, 11, 23, 0, 0, 1, 500000, tzinfo=UTC)


def sdk_event(role: str, data: object, **extra: str) -> CloudEvent:
    attributes = {"specversion": "1.0", "id": "id 1/ü", "source": "urn:flywheel:transformer", "time": AT,
                  "type": f"org.kubeflow.serving.inference.{role}", "datacontenttype": "application/json",
                  "inferenceservicename": "fraud", **extra}
    return CloudEvent(attributes, data)


def parse(message: http.HTTPMessage):
    return parse_cloudevent({k.lower(): v for k, v in message.headers.items()}, message.body, 0.0)


@pytest.mark.parametrize("data", [json.loads(transformer_request()), transformer_request()],
                         ids=["data", "data_base64"])
def test_structured_mode_from_the_sdk_is_read_with_data_or_data_base64(data):
    message = http.to_structured(sdk_event("request", data), JSONFormat())
    assert ("data_base64" in json.loads(message.body)) is isinstance(data, bytes)
    half = parse(message)
    assert half.id == "id 1/ü" and half.model == "fraud" and half.version == "v1"
    assert half.x.shape == (2, 19) and half.row_ids == ["t0", "t1"]
    assert half.time == pytest.approx(AT.timestamp())


def test_binary_mode_from_the_sdk_is_read_and_its_headers_percent_decoded():
    message = http.to_binary(sdk_event("response", transformer_response()), JSONFormat())
    assert message.headers["ce-id"] != "id 1/ü"  # the SDK percent-encodes it
    half = parse(message)
    assert (half.id, half.role, half.model, half.version) == ("id 1/ü", "response", "fraud", "v1")
    assert np.allclose(half.probabilities, 0.1)
    assert half.time == pytest.approx(AT.timestamp())


def test_structured_data_base64_that_is_not_base64_or_not_json_names_the_field():
    envelope = {"specversion": "1.0", "id": "x", "source": "s", "type": "org.kubeflow.serving.inference.request"}
    for bad in ("%%%not base64", "bm90IGpzb24="):  # the second is base64 of "not json"
        with pytest.raises(InvalidEvent) as caught:
            parse_cloudevent({"content-type": "application/cloudevents+json"},
                             json.dumps({**envelope, "data_base64": bad}).encode(), 0.0)
        assert caught.value.field == "data_base64"
    with pytest.raises(UnsupportedMediaType):
        parse_cloudevent({"content-type": "application/cloudevents+json"},
                         json.dumps({**envelope, "datacontenttype": "text/csv", "data_base64": "MSwy"}).encode(), 0.0)
