from datetime import datetime, timezone

import pytest

from flywheel_transformer._errors import InvalidRequest, TooManyInstances, UnsupportedMediaType, error_body, status_of
from flywheel_transformer._validation import decode_body, explain_undecodable, parse_instances

from conftest import RECENT_STAMP, transaction


def parse(body, max_instances=10):
    return parse_instances(body, max_instances)


def test_a_valid_request_becomes_typed_transactions_in_order():
    first, second = parse({"instances": [transaction(), transaction(transaction_id="t2", amount=3)]})
    assert first.transaction_id == "t0000000001"
    assert first.amount == 42.5
    assert second.transaction_id == "t2"
    assert second.amount == 3.0 and isinstance(second.amount, float)
    assert first.event_timestamp == datetime.fromisoformat(RECENT_STAMP.replace("Z", "+00:00"))
    assert first.event_hour == 3


def test_unknown_fields_such_as_labels_are_ignored():
    (parsed,) = parse({"instances": [transaction(is_fraud=1, label_timestamp="2026-12-01T00:00:00Z")]})
    assert not hasattr(parsed, "is_fraud")


@pytest.mark.parametrize(
    ("stamp", "hour"),
    [
        ("2026-11-23T23:59:59+00:00", 23),
        ("2026-11-23T01:30:00+02:00", 23),  # converted to UTC: the previous day's 23:30
        ("2026-11-23T05:00:00", 5),  # naive stamps are UTC, as everywhere in the data contract
        ("2026-11-23T05:00:00.123456Z", 5),
    ],
)
def test_event_hour_is_taken_in_utc(stamp, hour):
    (parsed,) = parse({"instances": [transaction(event_timestamp=stamp)]})
    assert parsed.event_hour == hour
    assert parsed.event_timestamp.tzinfo == timezone.utc


@pytest.mark.parametrize(
    "field",
    [
        "transaction_id",
        "card_id",
        "merchant_id",
        "amount",
        "currency",
        "country",
        "merchant_category",
        "channel",
        "event_timestamp",
    ],
)
def test_a_missing_field_is_named_with_its_instance_index(field):
    instance = transaction()
    del instance[field]
    with pytest.raises(InvalidRequest) as caught:
        parse({"instances": [transaction(), instance]})
    body = error_body(caught.value)
    assert status_of(caught.value) == 400
    assert body["field"] == field
    assert body["index"] == 1
    assert f"instances[1].{field}" in body["error"]
    assert "required" in body["error"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("amount", "12.5", "must be a number, got string"),
        ("amount", True, "must be a number, got boolean"),
        ("amount", float("inf"), "finite"),
        ("amount", 10**400, "finite"),
        ("card_id", 123456, "must be a string, got number"),
        ("channel", "", "must not be empty"),
        ("event_timestamp", 1700000000, "ISO-8601 string, got number"),
        ("event_timestamp", "yesterday", "not an ISO-8601 timestamp"),
        ("event_timestamp", "0001-01-01T00:00:00+01:00", "outside the years 1-9999"),  # was an OverflowError (500)
        ("event_timestamp", "9999-12-31T23:30:00-01:00", "outside the years 1-9999"),
        ("amount", float("nan"), "finite"),
        ("merchant_id", "   ", "must not be empty"),
        ("currency", ["EUR"], "must be a string, got array"),
        ("event_timestamp", None, "required"),
        ("country", None, "required"),
    ],
)
def test_a_mistyped_field_is_named_with_what_was_expected(field, value, words):
    with pytest.raises(InvalidRequest) as caught:
        parse({"instances": [transaction(**{field: value})]})
    body = error_body(caught.value)
    assert (body["field"], body["index"]) == (field, 0)
    assert words in body["error"]


def test_every_problem_of_a_request_is_listed_at_once():
    with pytest.raises(InvalidRequest) as caught:
        parse({"instances": [transaction(amount="x"), "not an object", transaction(card_id=None)]})
    problems = error_body(caught.value)["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [(0, "amount"), (1, None), (2, "card_id")]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([transaction()], "must be a JSON object"),
        ("instances", "must be a JSON object"),
        ({}, "instances: is required"),
        ({"instances": {"a": 1}}, "must be a list of transactions, got object"),
        ({"instances": []}, "at least one transaction"),
        ({"inputs": []}, "instances: is required"),
    ],
)
def test_a_body_of_the_wrong_shape_is_a_400_that_says_what_to_send(body, words):
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert status_of(caught.value) == 400
    assert words in str(caught.value)


def test_too_many_instances_is_a_413_that_names_the_limit():
    with pytest.raises(TooManyInstances) as caught:
        parse({"instances": [transaction()] * 3}, max_instances=2)
    assert status_of(caught.value) == 413
    assert "at most 2" in str(caught.value)


def test_json_sent_with_a_charset_is_decoded():
    assert decode_body(b'{"instances": []}', "application/json; charset=utf-8") == {"instances": []}


def test_an_already_decoded_body_passes_through():
    assert decode_body({"instances": []}, "application/json") == {"instances": []}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_a_415(content_type):
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_body(b"{}", content_type)
    assert status_of(caught.value) == 415
    assert "application/json" in str(caught.value)


def test_malformed_json_is_a_400():
    with pytest.raises(InvalidRequest) as caught:
        decode_body(b"{oops", "application/json; charset=utf-8")
    assert "not valid JSON" in str(caught.value)


def test_the_simulators_live_records_are_valid_requests(tmp_path):
    """What `python -m flywheel_core.sim live` writes is what clients (and `make up`) send."""
    import json
    import subprocess
    import sys

    out = tmp_path / "live.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel_core.sim",
            "live",
            "--scenario",
            "none",
            "--n",
            "20",
            "--size",
            "small",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    transactions = parse({"instances": records}, max_instances=len(records))
    assert [t.transaction_id for t in transactions] == [r["transaction_id"] for r in records]


def test_absurdly_nested_json_is_a_400_not_a_crash():
    with pytest.raises(InvalidRequest):
        decode_body(b"[" * 100_000 + b"]" * 100_000, "application/json; charset=utf-8")


def test_each_problem_of_one_instance_is_listed_at_its_location():
    instance = transaction(amount="12", currency=7)
    del instance["card_id"]
    with pytest.raises(InvalidRequest) as caught:
        parse({"instances": [transaction(), instance]})
    problems = error_body(caught.value)["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [(1, "card_id"), (1, "amount"), (1, "currency")]
    assert [p["error"] for p in problems] == [
        "is required",
        "must be a number, got string",
        "must be a string, got number",
    ]


def test_at_most_twenty_problems_are_reported():
    with pytest.raises(InvalidRequest) as caught:
        parse({"instances": [transaction(amount="x")] * 30}, max_instances=30)
    problems = error_body(caught.value)["problems"]
    assert len(problems) == 20
    assert problems[-1]["index"] == 19


def test_the_validators_are_built_once_not_per_request(monkeypatch):
    """Building a pydantic schema costs milliseconds; a request must only run the prebuilt validator."""
    import pydantic

    from flywheel_transformer import _validation

    def no_new_adapter(*args, **kwargs):
        raise AssertionError("a TypeAdapter was built while validating a request")

    monkeypatch.setattr(pydantic.TypeAdapter, "__init__", no_new_adapter)
    assert isinstance(_validation._INSTANCES, pydantic.TypeAdapter)
    assert [t.transaction_id for t in parse({"instances": [transaction()]})] == ["t0000000001"]


@pytest.mark.parametrize(
    ("body", "field", "index"),
    [
        (b'{"instances": [{"amount": NaN}]}', "amount", 0),
        (b'{"instances": [{"amount": 1}, {"card_id": "c", "amount": -1e400}]}', "amount", 1),
        (b'{"instances": [{"meta": {"scores": [0.5, Infinity]}}]}', "meta.scores[1]", 0),
        (b'{"batch": 1e999, "instances": []}', "batch", None),
        (b'{"instances": [{"amount": ' + b"9" * 5000 + b"}]}", "amount", 0),  # more digits than Python converts
    ],
)
def test_a_body_the_json_decoder_refused_for_a_number_names_that_number(body, field, index):
    error = explain_undecodable(body, "number is infinity")
    assert (error.field, error.index) == (field, index)
    assert "must be a finite number" in str(error)


@pytest.mark.parametrize("body", [b'{"instances": [', b"\xff\xfe", b"[" * 100_000])
def test_a_body_that_is_not_json_at_all_says_so_with_the_decoders_words(body):
    error = explain_undecodable(body, "unexpected end of data: line 1 column 16")
    assert error.field is None
    assert str(error) == "request: the body is not valid JSON (unexpected end of data: line 1 column 16)"
