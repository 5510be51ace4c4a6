"""The domain policy (_policy): impossible values are a 422 naming the field; values the model never saw are
scored but flagged `unseen`, from the version's metadata, and counted per field."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from flywheel_core import schema
from flywheel_core.model_repo import TrainingDomain
from flywheel_transformer._errors import ImpossibleValue, status_of
from flywheel_transformer._events import EventAttributes, EventSink
from flywheel_transformer._metrics import Metrics
from flywheel_transformer._policy import Limits, SeenValues, check_possible, unseen_fields
from flywheel_transformer._scoring import ONLINE_FEATURES, OnlineLookup, assemble
from flywheel_transformer._validation import parse_instances

from conftest import RECENT_STAMP, feast_answer, feast_transport, publish_version, run, transaction
from test_model import DEBUG, JSON, Harness, answering

NOW = datetime.fromisoformat(RECENT_STAMP.replace("Z", "+00:00")) + timedelta(hours=1)
"""The clock of the unit tests below: an hour after the builders' transactions."""
LIMITS = Limits(max_amount=10_000.0, max_future_skew=timedelta(seconds=300), max_event_age=timedelta(days=366))
DOMAIN = {
    "rows": 1000,
    "vocabularies": {
        "channel": ["ecom", "pos"],
        "country": ["DE", "FR", "US"],
        "currency": ["EUR", "USD"],
        "merchant_category": ["grocery", "travel"],
    },
    "ranges": {"amount": {"min": 1.0, "max": 1000.0}},
}


def parsed(**fields):
    (t,) = parse_instances({"instances": [transaction(**fields)]}, 10)
    return t


def stamp(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


# Impossible values: 422 naming the field and instance


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"amount": -0.01}, "amount", "cannot be negative"),
        ({"amount": 10_000.01}, "amount", "FLYWHEEL_TRANSFORMER_MAX_AMOUNT"),
        ({"amount": 1e300}, "amount", "above the largest possible amount"),
        ({"event_timestamp": stamp(timedelta(seconds=301))}, "event_timestamp", "ahead of this server's clock"),
        ({"event_timestamp": "9999-12-31T23:59:59Z"}, "event_timestamp", "MAX_FUTURE_SKEW_S"),
        ({"event_timestamp": stamp(-timedelta(days=367))}, "event_timestamp", "days old"),
        ({"event_timestamp": "0001-01-01T00:00:00Z"}, "event_timestamp", "MAX_EVENT_AGE_S"),
    ],
)
def test_an_impossible_value_is_a_422_naming_the_field(fields, field, words):
    with pytest.raises(ImpossibleValue) as caught:
        check_possible([parsed(**fields)], LIMITS, NOW)
    assert status_of(caught.value) == 422
    assert (caught.value.field, caught.value.index, caught.value.code) == (field, 0, "unprocessable")
    assert words in str(caught.value) and str(caught.value).startswith(f"instances[0].{field}: ")


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 0.0},  # a zero-amount authorization verifies a card (and card testers use them): scored
        {"amount": 10_000.0},  # the ceiling itself
        {"event_timestamp": stamp(timedelta(seconds=299))},  # within the clock skew
        {"event_timestamp": stamp(-timedelta(days=365))},  # old, but a replay of the last year is possible
    ],
)
def test_a_possible_value_passes(fields):
    check_possible([parsed(**fields)], LIMITS, NOW)


def test_every_impossible_value_of_a_request_is_listed_at_once():
    transactions = parse_instances(
        {
            "instances": [
                transaction(),
                transaction(amount=-1.0, event_timestamp=stamp(timedelta(days=1))),
                transaction(amount=1e9),
            ]
        },
        10,
    )
    with pytest.raises(ImpossibleValue) as caught:
        check_possible(transactions, LIMITS, NOW)
    assert [(p["index"], p["field"]) for p in caught.value.problems] == [
        (1, "amount"),
        (1, "event_timestamp"),
        (2, "amount"),
    ]


# Unseen values: from the version's training domain


SEEN = SeenValues.of(TrainingDomain(**DOMAIN))


@pytest.mark.parametrize(
    ("fields", "unseen"),
    [
        ({"country": "DE", "currency": "EUR", "channel": "pos", "merchant_category": "grocery"}, []),
        ({"country": "XX"}, ["country"]),
        ({"country": "de"}, ["country"]),  # exact strings: the model hashes "de", which it never saw
        (
            {"channel": "atm", "currency": "BRL", "merchant_category": "casino"},
            ["channel", "currency", "merchant_category"],
        ),
        ({"amount": 1100.0}, []),  # within the 10% margin above the training max
        ({"amount": 1100.01}, ["amount"]),
        ({"amount": 0.9091}, []),  # within the margin below the training min (1.0 / 1.1)
        ({"amount": 0.9}, ["amount"]),
        ({"amount": 0.0, "country": "ZZ"}, ["amount", "country"]),  # sorted
        ({"card_id": "c-new", "merchant_id": "m-new"}, []),  # new entities are unknown_entities, not unseen
    ],
)
def test_unseen_fields_are_the_values_outside_the_training_domain(fields, unseen):
    base = {"country": "DE", "currency": "EUR", "channel": "pos", "merchant_category": "grocery", "amount": 50.0}
    assert unseen_fields(parsed(**{**base, **fields}), SEEN, 0.1) == unseen


def test_a_version_without_a_training_domain_flags_nothing():
    assert unseen_fields(parsed(country="XX", amount=1e6), None, 0.1) == []


def domain_repo(tmp_path, **overrides):
    repo = tmp_path / "model_repo"
    publish_version(repo, training_domain=DOMAIN, **overrides)
    return repo


def test_an_unseen_value_is_scored_flagged_counted_and_logged(tmp_path):
    posted = []

    def sink(request):
        posted.append(json.loads(request.content))
        return httpx.Response(200)

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
    harness = Harness(domain_repo(tmp_path), events=events)
    known = transaction(transaction_id="a", country="DE", currency="EUR", channel="pos", merchant_category="grocery")
    odd = {**known, "transaction_id": "b", "country": "XX", "amount": 50_000.0}

    async def go():
        body, _ = await harness.model({"instances": [known, odd]}, dict(JSON))
        await harness.model.events.drain()
        await harness.model.events.aclose()
        return body

    body = run(go())
    first, second = body["predictions"]
    assert (first["unseen"], second["unseen"]) == ([], ["amount", "country"])
    assert second["decision"] in ("approve", "decline")  # still scored
    assert harness.metric("flywheel_transformer_unseen_values_total", field="country") == 1
    assert harness.metric("flywheel_transformer_unseen_values_total", field="amount") == 1
    assert harness.metric("flywheel_transformer_unseen_values_total", field="currency") == 0
    response = next(event for event in posted if "outputs" in event)  # the response event's V2 body
    unseen = next(output for output in response["outputs"] if output["name"] == "unseen")
    assert unseen == {"name": "unseen", "shape": [2], "datatype": "BYTES", "data": ["", "amount,country"]}


def test_a_version_published_before_the_training_domain_existed_is_served_with_no_unseen_checks(repo):
    harness = Harness(repo)  # conftest's metadata has no training_domain, like the model under model_repo/
    assert harness.model.spec.seen is None
    body, _ = harness.predict(transaction(country="XX", currency="XXX", amount=9_000_000.0))
    assert body["predictions"][0]["unseen"] == []


def test_an_impossible_value_is_refused_before_any_lookup_and_counted_as_invalid(repo):
    looked_up = []

    def handler(body):
        looked_up.append(body)
        return answering()(body)

    harness = Harness(repo, features=feast_transport(handler))
    with pytest.raises(ImpossibleValue):
        harness.predict(transaction(amount=-5.0))
    assert looked_up == []
    assert harness.metric("flywheel_transformer_invalid_requests_total") == 1


# A response can never carry a non-finite number


def test_an_amount_far_above_a_tiny_card_mean_is_clipped_to_a_finite_fp32_input(tmp_path):
    """amount / amount_mean_30d overflows FP32 to inf for a tiny (finite, positive) stored mean; the predictor
    call could not be encoded and the request was a 500."""
    tiny = {name: [1e-300] for name in ONLINE_FEATURES}

    def handler(body):
        return feast_answer(body["entities"]["card_id"], body["entities"]["merchant_id"], tiny)

    repo = tmp_path / "model_repo"
    publish_version(repo)
    harness = Harness(repo, features=feast_transport(handler), debug=True)
    body, _ = harness.predict(transaction(amount=10_000_000.0), headers=DEBUG)
    features = body["predictions"][0]["features"]
    assert all(math.isfinite(v) for v in features.values())
    assert features["amount_to_card_mean"] == pytest.approx(3.4028234663852886e38)


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    amount=st.floats(min_value=0.0, max_value=1e12),
    hour=st.integers(0, 23),
    online=st.lists(st.one_of(st.none(), finite), min_size=len(ONLINE_FEATURES), max_size=len(ONLINE_FEATURES)),
    defaults=st.lists(finite, min_size=len(schema.NUMERIC_FEATURES), max_size=len(schema.NUMERIC_FEATURES)),
)
def test_any_possible_transaction_with_any_finite_online_values_gives_a_finite_model_input(
    amount, hour, online, defaults
):
    """By construction: validation admits only finite amounts within MAX_AMOUNT (at most 1e12), the feature
    client only finite online values, the spec only finite defaults; whatever they are, every input is finite."""
    (t,) = parse_instances(
        {"instances": [transaction(amount=amount, event_timestamp=f"2026-11-23T{hour:02d}:00:00Z")]}, 1
    )
    values = dict(zip(ONLINE_FEATURES, online, strict=True))
    assembled = assemble([t], OnlineLookup.of([values]), dict(zip(schema.NUMERIC_FEATURES, defaults, strict=True)))
    assert all(math.isfinite(v) for v in assembled.vectors[0])
