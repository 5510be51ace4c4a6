import math

import numpy as np
import pandas as pd
import pytest

from flywheel_core import ondemand, schema
from flywheel_core.schema import MERCHANT_FEATURES
from flywheel_transformer._scoring import (
    APPROVE,
    DECLINE,
    ENTITY_FEATURES,
    MissingReason,
    OnlineLookup,
    assemble,
    build_row,
    decide,
    named_features,
)
from flywheel_transformer._validation import parse_instances

from conftest import DEFAULTS, ONLINE_NAMES, known_values, transaction

COLUMN_NAMES = [c["name"] for c in schema.COLUMNS]


def parsed(*instances):
    return parse_instances({"instances": list(instances)}, 100)


def online_rows(n):
    values = known_values(n)
    return [{name: values[name][i] for name in ONLINE_NAMES} for i in range(n)]


def test_vectors_are_laid_out_by_the_shared_schema_with_online_on_demand_and_hashed_values():
    (t,) = parsed(transaction(amount=100.0, event_timestamp="2026-11-23T02:00:00Z"))
    online = online_rows(1)
    online[0]["amount_mean_30d"] = 50.0
    result = assemble([t], OnlineLookup.of(online), DEFAULTS)
    row = named_features(COLUMN_NAMES, result.vectors[0])
    assert len(result.vectors[0]) == schema.INPUT_DIM
    assert row["txn_count_1h"] == online[0]["txn_count_1h"]
    assert row["amount_mean_30d"] == 50.0
    assert row["amount_to_card_mean"] == 2.0
    assert row["is_night"] == 1.0
    assert math.isclose(row["amount_log"], math.log1p(100.0), rel_tol=1e-6)
    assert row["card_id"] == schema.bucket("card_id", t.card_id)
    assert row["channel"] == schema.bucket("channel", "pos")
    assert result.missing == [[]]
    assert result.degraded is False


def test_missing_online_features_take_training_defaults_and_are_listed():
    (t,) = parsed(transaction())
    online = online_rows(1)
    online[0]["txn_count_24h"] = None
    online[0]["merchant_fraud_rate_30d"] = None
    result = assemble([t], OnlineLookup.of(online), DEFAULTS)
    row = named_features(COLUMN_NAMES, result.vectors[0])
    assert row["txn_count_24h"] == DEFAULTS["txn_count_24h"]
    assert row["merchant_fraud_rate_30d"] == DEFAULTS["merchant_fraud_rate_30d"]
    assert result.missing == [["txn_count_24h", "merchant_fraud_rate_30d"]]


def test_a_card_without_history_gets_ratio_one_not_a_ratio_to_the_default_mean():
    (t,) = parsed(transaction(amount=500.0))
    online = online_rows(1)
    online[0]["amount_mean_30d"] = None
    row = named_features(COLUMN_NAMES, assemble([t], OnlineLookup.of(online), DEFAULTS).vectors[0])
    assert row["amount_to_card_mean"] == 1.0  # as Feast's on-demand view computes it at training time
    assert row["amount_mean_30d"] == DEFAULTS["amount_mean_30d"]


def test_a_failed_lookup_scores_everything_with_defaults_and_marks_the_batch_degraded():
    transactions = parsed(transaction(), transaction(transaction_id="t2"))
    result = assemble(transactions, None, DEFAULTS)
    assert result.degraded is True
    assert result.missing == [ONLINE_NAMES, ONLINE_NAMES]
    assert result.reasons == [dict.fromkeys(ONLINE_NAMES, "lookup_failed")] * 2
    assert result.unknown_entities == [[], []]  # a failed lookup says nothing about the card or merchant
    for vector in result.vectors:
        row = named_features(COLUMN_NAMES, vector)
        assert all(row[name] == DEFAULTS[name] for name in ONLINE_NAMES)


def not_found(n, entities):
    """A lookup of n rows where the store has no row for `entities` (Feast NOT_FOUND on all their features)."""
    names = [name for entity in entities for name in ENTITY_FEATURES[entity]]
    values = [{name: (None if name in names else 1.0) for name in ONLINE_NAMES} for _ in range(n)]
    return OnlineLookup(values=values, reasons=[dict.fromkeys(names, MissingReason.NOT_FOUND) for _ in range(n)])


@pytest.mark.parametrize("entities", [["card"], ["merchant"], ["card", "merchant"]])
def test_an_entity_unknown_to_the_store_is_named_and_not_degraded(entities):
    (t,) = parsed(transaction(card_id="c-new", merchant_id="m-new"))
    result = assemble([t], not_found(1, entities), DEFAULTS)
    assert result.degraded is False
    assert result.unknown_entities == [entities]
    expected = [name for name in ONLINE_NAMES if any(name in ENTITY_FEATURES[e] for e in entities)]
    assert result.missing == [expected]
    assert result.reasons == [dict.fromkeys(expected, "not_found")]
    row = named_features(COLUMN_NAMES, result.vectors[0])
    assert all(row[name] == DEFAULTS[name] for name in expected)


def test_a_stale_or_partly_missing_entity_is_not_unknown():
    (t,) = parsed(transaction())
    values = {name: 1.0 for name in ONLINE_NAMES}
    values["txn_count_1h"] = None
    for name in MERCHANT_FEATURES:
        values[name] = None
    reasons = {"txn_count_1h": MissingReason.NOT_FOUND}
    reasons.update(dict.fromkeys(MERCHANT_FEATURES, MissingReason.OUTSIDE_MAX_AGE))
    result = assemble([t], OnlineLookup(values=[values], reasons=[reasons]), DEFAULTS)
    assert result.unknown_entities == [[]]
    assert result.reasons[0] == {"txn_count_1h": "not_found", **dict.fromkeys(MERCHANT_FEATURES, "outside_max_age")}
    assert result.missing == [list(result.reasons[0])]


def test_missing_values_without_a_status_are_null_values():
    (t,) = parsed(transaction())
    online = online_rows(1)
    online[0]["txn_count_24h"] = None
    result = assemble([t], OnlineLookup.of(online), DEFAULTS)
    assert result.reasons == [{"txn_count_24h": "null_value"}]
    assert result.unknown_entities == [[]]


def test_vectors_are_exact_fp32_values():
    (t,) = parsed(transaction(amount=0.1))
    vector = assemble([t], OnlineLookup.of(online_rows(1)), DEFAULTS).vectors[0]
    assert vector == np.asarray(vector, dtype=np.float32).astype(np.float64).tolist()


def test_serving_rows_match_the_trainers_frame_path():
    """The same transactions through the transformer and through the trainer's vectorised path agree."""
    instances = [
        transaction(transaction_id="a", amount=12.0, event_timestamp="2026-11-23T00:30:00Z"),
        transaction(
            transaction_id="b", card_id="c9", amount=950.0, channel="ecom", event_timestamp="2026-11-23T13:00:00Z"
        ),
        transaction(
            transaction_id="c", merchant_id="m7", amount=0.0, country="FR", event_timestamp="2026-11-23T05:59:00Z"
        ),
    ]
    transactions = parsed(*instances)
    online = online_rows(3)
    online[1]["amount_mean_30d"] = None
    online[2]["txn_count_1h"] = None
    served = np.asarray(assemble(transactions, OnlineLookup.of(online), DEFAULTS).vectors, dtype=np.float32)

    frame = pd.DataFrame(instances)
    for name in ONLINE_NAMES:
        frame[name] = [row[name] for row in online]
    frame["event_hour"] = [t.event_hour for t in transactions]
    frame = pd.concat([frame, ondemand.transaction_context(frame)], axis=1)
    trained = schema.vectorize_frame(frame, DEFAULTS)
    np.testing.assert_allclose(served, trained, rtol=1e-6)


def test_build_row_uses_the_shared_on_demand_function():
    (t,) = parsed(transaction(amount=80.0, event_timestamp="2026-11-23T22:00:00Z"))
    row = build_row(t, {"amount_mean_30d": 40.0})
    assert {k: row[k] for k in ondemand.transaction_context_row(80.0, 22, 40.0)} == ondemand.transaction_context_row(
        80.0, 22, 40.0
    )


def test_the_threshold_is_the_lowest_score_that_declines():
    assert decide(0.5, 0.5) == DECLINE
    assert decide(0.4999, 0.5) == APPROVE
    assert decide(0.0, 0.0) == DECLINE
    assert decide(1.0, 1.0) == DECLINE
