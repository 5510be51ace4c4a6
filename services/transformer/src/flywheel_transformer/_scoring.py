"""From transactions and their online features to model input, and from scores to decisions.

Domain code: no framework, no I/O. The row handed to `flywheel_core.schema.vectorize` is built exactly
as the trainer's training frame is (online features, on-demand features from
`flywheel_core.ondemand.transaction_context_row`, raw categorical values), so serving cannot drift from
training. Missing online values stay None in the row so that vectorize fills in the model's training
defaults, and so that the on-demand ratio sees "no history" exactly as Feast's on-demand view does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel_core.ondemand import transaction_context_row
from flywheel_core.schema import HASHED_COLUMNS, ONLINE_FEATURE_REFS, vectorize

from ._validation import Transaction

ONLINE_FEATURES: tuple[str, ...] = tuple(ref.split(":", 1)[1] for ref in ONLINE_FEATURE_REFS)
"""Bare names of the features fetched online, in ONLINE_FEATURE_REFS order."""

OnlineValues = dict[str, float | None]
"""One instance's online features by bare name; None means missing."""

DECLINE = "decline"
APPROVE = "approve"


@dataclass(frozen=True)
class Assembled:
    """Model input for a batch of transactions and what was missing on the way."""

    vectors: list[list[float]]
    """Model input rows, already rounded to FP32, so what is logged and shown is exactly what is scored."""
    missing: list[list[str]]
    """Per instance, the online features that were missing and took the training default."""
    degraded: bool
    """True when the feature lookup failed and every online feature took its default."""


def build_row(transaction: Transaction, online: OnlineValues) -> dict[str, Any]:
    """The named raw values of one transaction, before defaults: what vectorize lays out."""
    row: dict[str, Any] = {name: online.get(name) for name in ONLINE_FEATURES}
    row.update(
        transaction_context_row(
            amount=transaction.amount,
            event_hour=transaction.event_hour,
            amount_mean_30d=online.get("amount_mean_30d"),
        )
    )
    for column in HASHED_COLUMNS:
        row[column] = getattr(transaction, column)
    return row


def assemble(
    transactions: Sequence[Transaction],
    online: Sequence[OnlineValues] | None,
    defaults: Mapping[str, float],
) -> Assembled:
    """Vectorise a batch; `online` None means the lookup failed and defaults stand in for all of it."""
    degraded = online is None
    values: Sequence[OnlineValues] = [{} for _ in transactions] if online is None else online
    rows = [build_row(t, v) for t, v in zip(transactions, values, strict=True)]
    missing = [[name for name in ONLINE_FEATURES if v.get(name) is None] for v in values]
    vectors = np.asarray(vectorize(rows, defaults), dtype=np.float32).tolist()
    return Assembled(vectors=vectors, missing=missing, degraded=degraded)


def decide(score: float, threshold: float) -> str:
    """Decline at or above the threshold: the threshold is the lowest fraud probability that declines."""
    return DECLINE if score >= threshold else APPROVE


def named_features(column_names: Sequence[str], vector: Sequence[float]) -> dict[str, float]:
    """A model input row by column name, as served (defaults applied, categoricals as bucket ids)."""
    return dict(zip(column_names, vector, strict=True))
