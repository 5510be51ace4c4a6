"""The skew contract: bodies round-trip, limits hold, and `matches` is the one definition of a match."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flywheel_contracts.skew import MAX_EXAMPLES, Example, FeatureSkew, ServedRow, SkewResult, SkewSample, matches


def test_a_result_round_trips_and_names_its_mismatched_features_most_first():
    result = SkewResult(model="fraud", version="v2", checked_at=5.0, rows=10, unmatched=1, features={
        "a": FeatureSkew(compared=10, mismatched=1), "b": FeatureSkew(compared=10, mismatched=4),
        "c": FeatureSkew(compared=10, mismatched=0)})
    assert SkewResult.model_validate_json(result.model_dump_json()) == result
    assert result.mismatched_features == ["b", "a"]


def test_examples_are_capped_and_unknown_fields_refused():
    with pytest.raises(ValidationError):
        FeatureSkew(compared=9, mismatched=9, examples=[Example(id=str(i), served=1.0, offline=2.0)
                                                        for i in range(MAX_EXAMPLES + 1)])
    with pytest.raises(ValidationError):
        SkewSample.model_validate({"model": "fraud", "version": "v1", "seen": 0, "rows": [], "extra": 1})
    with pytest.raises(ValidationError):
        ServedRow(id="t1", time=math.inf, inputs={})
    with pytest.raises(ValidationError):
        SkewResult.model_validate({"schema_version": 2, "model": "m", "version": "v1", "checked_at": 0, "rows": 0,
                                   "unmatched": 0, "features": {}})


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(finite)
def test_a_value_matches_itself_and_its_float32_rounding(value):
    assert matches(value, value)
    assert matches(float(value), value + value * 1e-7)


@given(finite, finite)
def test_matching_is_symmetric_up_to_the_scale_it_is_relative_to(a, b):
    if abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b)) / 2:
        assert matches(a, b) and matches(b, a)


def test_missing_matches_only_missing():
    assert matches(None, None) and matches(math.nan, math.nan)
    assert not matches(None, 0.0) and not matches(0.0, None) and not matches(math.nan, 0.0)
    assert not matches(1.0, 1.01)
