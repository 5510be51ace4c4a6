"""On-demand (request-time) features, one definition for training and serving.

Feast's on-demand feature view `transaction_context` calls `transaction_context` on frames when the
trainer builds its point-in-time training set; the transformer calls `transaction_context_row` on each
live request. A test keeps the two identical, which is what makes the features the model was trained on
the features it is served.

Inputs: `amount` (transaction amount), `event_hour` (0-23, UTC) and `amount_mean_30d` (the card's online
value *before* any default is applied: missing means the card has no history, and the ratio is then 1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

NIGHT_HOURS = range(0, 6)
"""Hours (UTC) counted as night: card fraud clusters there while card holders sleep."""


def _hour_angle(hour: float) -> float:
    return 2.0 * math.pi * (hour % 24) / 24.0


def transaction_context_row(amount: float, event_hour: int, amount_mean_30d: float | None) -> dict[str, float | int]:
    """The on-demand features of one transaction."""
    amount = float(amount)
    mean = None if amount_mean_30d is None else float(amount_mean_30d)
    ratio = amount / mean if mean is not None and not math.isnan(mean) and mean > 0 else 1.0
    angle = _hour_angle(event_hour)
    return {
        "amount_log": math.log1p(max(amount, 0.0)),
        "amount_to_card_mean": ratio,
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
        "is_night": int(int(event_hour) in NIGHT_HOURS),
    }


def transaction_context(frame: pd.DataFrame) -> pd.DataFrame:
    """The on-demand features of every row of `frame` (columns amount, event_hour, amount_mean_30d)."""
    amount = frame["amount"].astype("float64")
    hour = frame["event_hour"].astype("int64")
    mean = pd.to_numeric(frame["amount_mean_30d"], errors="coerce").astype("float64")
    usable = mean.notna() & (mean > 0)
    angle = 2.0 * np.pi * (hour % 24) / 24.0
    out = pd.DataFrame(index=frame.index)
    out["amount_log"] = np.log1p(amount.clip(lower=0.0))
    out["amount_to_card_mean"] = (amount / mean.where(usable, 1.0)).where(usable, 1.0).astype("float64")
    out["hour_sin"] = np.sin(angle).astype("float64")
    out["hour_cos"] = np.cos(angle).astype("float64")
    out["is_night"] = hour.isin(list(NIGHT_HOURS)).astype("int64")
    return out
