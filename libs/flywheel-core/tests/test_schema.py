import math

import numpy as np
import pandas as pd

from flywheel_core import schema


def raw_row(**overrides):
    row = {name: float(i + 1) for i, name in enumerate(schema.NUMERIC_FEATURES)}
    row.update(card_id="c000001", merchant_id="m00001", country="DE", merchant_category="grocery", channel="pos", currency="EUR")
    row.update(overrides)
    return row


def test_columns_list_numeric_features_then_hashed_columns_in_order():
    names = [column["name"] for column in schema.COLUMNS]
    assert names == list(schema.NUMERIC_FEATURES) + list(schema.HASHED_COLUMNS)
    assert schema.INPUT_DIM == len(names) == 19


def test_bucket_is_stable_in_range_and_zero_for_missing():
    # Pinned values, not bucket(x) == bucket(x): Python's str hash is salted per process, so only a pin shows
    # the ids are the same in the trainer's process, the transformer's, and next release's (published models
    # were trained on them).
    assert (schema.bucket("country", "DE"), schema.bucket("card_id", "c123456")) == (38, 883)
    assert 1 <= schema.bucket("card_id", "c123456") < schema.HASHED_COLUMNS["card_id"]
    assert schema.bucket("country", None) == 0
    assert schema.bucket("country", float("nan")) == 0


def test_vectorize_fills_missing_numerics_from_defaults_and_missing_categoricals_with_zero():
    row = raw_row(txn_count_1h=None, merchant_fraud_rate_30d=float("nan"))
    del row["country"]
    [vector] = schema.vectorize([row], defaults={"txn_count_1h": 7.0})
    assert vector[0] == 7.0
    assert vector[schema.NUMERIC_FEATURES.index("merchant_fraud_rate_30d")] == 0.0
    assert vector[len(schema.NUMERIC_FEATURES) + list(schema.HASHED_COLUMNS).index("country")] == 0.0


def test_vectorize_frame_equals_vectorize_row_by_row():
    rows = [raw_row(), raw_row(txn_count_1h=None, country=None, amount_log=math.nan), raw_row(card_id="c999999")]
    defaults = {"txn_count_1h": 3.0, "amount_log": 1.5}
    expected = np.asarray(schema.vectorize(rows, defaults), dtype=np.float32)
    actual = schema.vectorize_frame(pd.DataFrame(rows), defaults)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


def test_as_of_steps_just_before_the_transaction():
    ts = pd.Timestamp("2026-01-01T00:00:00Z")
    assert schema.as_of(ts) < ts
    assert ts - schema.as_of(ts) == pd.Timedelta(microseconds=1)
