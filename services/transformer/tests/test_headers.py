import pytest

from flywheel_transformer import DECISIONS_HEADER, INFERENCE_ID_HEADER, MODEL_VERSION_HEADER, SCORES_HEADER
from flywheel_transformer._errors import InvalidHeader, error_body, status_of
from flywheel_transformer._headers import SCORE_HEADERS_MAX_INSTANCES, answer_headers, requested_version


@pytest.mark.parametrize("headers", [{}, {MODEL_VERSION_HEADER: ""}, {MODEL_VERSION_HEADER: "  "}])
def test_an_absent_or_empty_version_header_asks_for_no_version(headers):
    assert requested_version(headers) is None


@pytest.mark.parametrize(("value", "version"), [("v2", "v2"), (" v10 ", "v10")])
def test_a_version_header_names_a_version(value, version):
    assert requested_version({MODEL_VERSION_HEADER: value}) == version


@pytest.mark.parametrize("value", ["2", "V2", "v", "v2.1", "latest", "v-1", "v2,v3", "../v1", "v２"])
def test_a_malformed_version_header_is_a_400_naming_the_header(value):
    with pytest.raises(InvalidHeader) as caught:
        requested_version({MODEL_VERSION_HEADER: value})
    assert status_of(caught.value) == 400
    body = error_body(caught.value)
    assert body["type"] == "invalid_header"
    assert body["header"] == MODEL_VERSION_HEADER
    assert MODEL_VERSION_HEADER in body["error"] and "v<number>" in body["error"]


def test_answer_headers_carry_the_version_and_six_significant_digit_scores_and_decisions():
    headers = answer_headers(
        "id-1", "v2", [0.1, 0.123456789, 1.5e-07, 1.0], ["approve", "approve", "approve", "decline"]
    )
    assert headers == {
        INFERENCE_ID_HEADER: "id-1",
        MODEL_VERSION_HEADER: "v2",
        SCORES_HEADER: "0.1,0.123457,1.5e-07,1",
        DECISIONS_HEADER: "approve,approve,approve,decline",
    }


def test_score_headers_stop_above_256_instances_and_the_version_stays():
    at_limit = answer_headers(
        "id", "v1", [0.5] * SCORE_HEADERS_MAX_INSTANCES, ["decline"] * SCORE_HEADERS_MAX_INSTANCES
    )
    assert len(at_limit[SCORES_HEADER].split(",")) == 256
    assert len(at_limit[DECISIONS_HEADER].split(",")) == 256
    above = answer_headers("id", "v1", [0.5] * 257, ["decline"] * 257)
    assert above == {INFERENCE_ID_HEADER: "id", MODEL_VERSION_HEADER: "v1"}


@pytest.mark.parametrize("version", [None, "", "1", "v1\n", "v1\r\nx-injected: yes", "fraud-v1", "v２"])
def test_a_missing_or_malformed_reported_version_never_becomes_a_header(version):
    assert MODEL_VERSION_HEADER not in answer_headers("id", version, [0.2], ["approve"])
