"""Split rows by time: train (oldest), validation, test (newest), never shuffled across a boundary.

Boundaries are timestamps, not row positions, so rows sharing an instant never straddle two splits,
and every training row happened strictly before every validation row, which happened strictly before
every test row. This mirrors how the model is used: trained on the past, scored on the future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._errors import DataError


@dataclass(frozen=True)
class TimeSplit:
    """Row indices of each split (into the time-sorted frame) and the two boundary instants."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    validation_start: pd.Timestamp
    test_start: pd.Timestamp

    def describe(self, times: pd.Series) -> dict[str, dict[str, object]]:
        """Rows and time range of each split, for lineage and the model card."""
        out: dict[str, dict[str, object]] = {}
        for name in ("train", "validation", "test"):
            rows = getattr(self, name)
            window = times.iloc[rows]
            out[name] = {"rows": int(len(rows)), "start": _iso(window.min()), "end": _iso(window.max())}
        return out


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def time_split(times: pd.Series, validation_fraction: float, test_fraction: float) -> TimeSplit:
    """Split time-sorted `times` at the instants that leave the requested shares in validation and test."""
    values = times.to_numpy()
    if len(values) == 0:
        raise DataError("no labelled rows to split: check the data directory and the training cut-off")
    if np.any(values[1:] < values[:-1]):
        raise DataError("rows must be sorted by event_timestamp before splitting")
    n = len(values)
    validation_start = values[min(int(n * (1.0 - validation_fraction - test_fraction)), n - 1)]
    test_start = values[min(int(n * (1.0 - test_fraction)), n - 1)]
    index = np.arange(n)
    train = index[values < validation_start]
    validation = index[(values >= validation_start) & (values < test_start)]
    test = index[values >= test_start]
    if min(len(train), len(validation), len(test)) == 0:
        raise DataError(
            f"the time split left an empty split (train {len(train)}, validation {len(validation)}, "
            f"test {len(test)} rows): simulate more history or change the split fractions"
        )
    return TimeSplit(train, validation, test, pd.Timestamp(validation_start), pd.Timestamp(test_start))
