import numpy as np
import pandas as pd
import pytest

from flywheel_trainer import DataError
from flywheel_trainer._split import time_split


def _times(values):
    return pd.Series(pd.to_datetime(values, unit="s", utc=True))


def test_splits_are_ordered_in_time_and_cover_every_row():
    times = _times(np.sort(np.random.default_rng(0).integers(0, 10_000, 1000)))
    split = time_split(times, 0.15, 0.15)
    assert len(split.train) + len(split.validation) + len(split.test) == len(times)
    assert times.iloc[split.train].max() < split.validation_start <= times.iloc[split.validation].min()
    assert times.iloc[split.validation].max() < split.test_start <= times.iloc[split.test].min()
    assert abs(len(split.test) - 150) < 10


def test_rows_sharing_an_instant_never_straddle_a_boundary():
    times = _times([0] * 50 + [1] * 50 + [2] * 50 + [3] * 50)
    split = time_split(times, 0.3, 0.3)
    for a, b in [(split.train, split.validation), (split.validation, split.test), (split.train, split.test)]:
        assert not set(times.iloc[a]) & set(times.iloc[b])


def test_unsorted_or_degenerate_input_is_refused():
    with pytest.raises(DataError, match="sorted"):
        time_split(_times([3, 1, 2]), 0.2, 0.2)
    with pytest.raises(DataError, match="empty split"):
        time_split(_times([5] * 10), 0.2, 0.2)
