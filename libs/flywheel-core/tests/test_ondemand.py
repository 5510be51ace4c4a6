import math

import pandas as pd
import pytest

from flywheel_core.ondemand import transaction_context, transaction_context_row

CASES = [
    (120.0, 3, 60.0),
    (0.0, 23, 10.0),
    (55.5, 12, None),
    (10.0, 0, 0.0),
    (-5.0, 5, 20.0),
]


def test_frame_and_row_versions_agree_exactly():
    frame = pd.DataFrame(CASES, columns=["amount", "event_hour", "amount_mean_30d"])
    vectorised = transaction_context(frame).to_dict("records")
    for (amount, hour, mean), expected in zip(CASES, vectorised, strict=True):
        row = transaction_context_row(amount, hour, mean)
        assert row.keys() == expected.keys()
        for name, value in row.items():
            assert value == pytest.approx(expected[name], abs=1e-12), name


def test_ratio_is_one_when_the_card_has_no_history():
    assert transaction_context_row(80.0, 10, None)["amount_to_card_mean"] == 1.0
    assert transaction_context_row(80.0, 10, math.nan)["amount_to_card_mean"] == 1.0


def test_night_hours_are_flagged():
    assert transaction_context_row(1.0, 2, 1.0)["is_night"] == 1
    assert transaction_context_row(1.0, 14, 1.0)["is_night"] == 0
