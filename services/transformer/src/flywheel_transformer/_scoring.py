"""From transactions and their online features to model input, and from scores to decisions.

Domain code: no framework, no I/O. The row handed to `flywheel_core.schema.vectorize` is built exactly
as the trainer's training frame is (online features, on-demand features from
`flywheel_core.ondemand.transaction_context_row`, raw categorical values), so serving cannot drift from
training. Missing online values stay None in the row so that vectorize fills in the model's training
defaults, and so that the on-demand ratio sees "no history" exactly as Feast's on-demand view does.

Every missing online value carries a reason (`MissingReason`), and an instance whose card or merchant the
online store does not know lists that entity in `unknown_entities`. `degraded` is narrower: the lookup
itself failed, so nothing about the entities is known. An unknown card is not degraded: the trainer gave
a card's first transactions the same training defaults, so the model has seen such rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from flywheel_core.ondemand import transaction_context_row
from flywheel_core.schema import CARD_FEATURES, HASHED_COLUMNS, MERCHANT_FEATURES, ONLINE_FEATURE_REFS, vectorize

from ._validation import Transaction

ONLINE_FEATURES: tuple[str, ...] = tuple(ref.split(":", 1)[1] for ref in ONLINE_FEATURE_REFS)
"""Bare names of the features fetched online, in ONLINE_FEATURE_REFS order."""

OnlineValues = dict[str, float | None]
"""One instance's online features by bare name; None means missing."""

ENTITY_FEATURES: dict[str, tuple[str, ...]] = {"card": CARD_FEATURES, "merchant": MERCHANT_FEATURES}
"""The online features of each entity of a transaction (card_id, merchant_id), in `unknown_entities` order."""


class MissingReason(StrEnum):
    """Why an online feature of an instance took its training default (the values of `missing_reasons`)."""

    NOT_FOUND = "not_found"
    """Feast NOT_FOUND: the online store has no row for this card or merchant (new, or never materialised)."""
    OUTSIDE_MAX_AGE = "outside_max_age"
    """Feast OUTSIDE_MAX_AGE: the row is older than its feature view's ttl (materialisation is behind)."""
    NULL_VALUE = "null_value"
    """The row exists but holds no usable number for this feature (Feast NULL_VALUE, a null, a non-number,
    or a feature Feast's answer left out)."""
    LOOKUP_FAILED = "lookup_failed"
    """The feature lookup itself failed and FEATURES_FALLBACK=defaults scored without it (`degraded`)."""


MissingReasons = dict[str, MissingReason]
"""One instance's missing online features by bare name, each with its reason."""


@dataclass(frozen=True)
class OnlineLookup:
    """What the online store answered for a batch, per instance in request order."""

    values: list[OnlineValues]
    reasons: list[MissingReasons] = field(default_factory=list)
    """Per instance, the reason of each missing value; a missing value not listed counts as NULL_VALUE."""

    @classmethod
    def of(cls, values: Sequence[OnlineValues]) -> OnlineLookup:
        """Values without statuses: every missing one is NULL_VALUE."""
        return cls(values=list(values))

    def reasons_of(self, i: int) -> MissingReasons:
        given = self.reasons[i] if i < len(self.reasons) else {}
        return {
            name: given.get(name, MissingReason.NULL_VALUE)
            for name in ONLINE_FEATURES
            if self.values[i].get(name) is None
        }


FP32_MAX = float(np.finfo(np.float32).max)
"""The largest finite FP32 number: model input values are clipped to +-FP32_MAX."""

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
    reasons: list[dict[str, str]] = field(default_factory=list)
    """Per instance, `missing` with each feature's `MissingReason` value (same keys, same order)."""
    unknown_entities: list[list[str]] = field(default_factory=list)
    """Per instance, the entities ("card", "merchant") the online store has no row for: every one of their
    features NOT_FOUND. Empty when degraded: a failed lookup says nothing about the entities."""


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
    online: OnlineLookup | None,
    defaults: Mapping[str, float],
) -> Assembled:
    """Vectorise a batch; `online` None means the lookup failed and defaults stand in for all of it."""
    degraded = online is None
    if online is None:
        online = OnlineLookup(
            values=[{} for _ in transactions],
            reasons=[dict.fromkeys(ONLINE_FEATURES, MissingReason.LOOKUP_FAILED) for _ in transactions],
        )
    values = online.values
    rows = [build_row(t, v) for t, v in zip(transactions, values, strict=True)]
    reasons = [online.reasons_of(i) for i in range(len(values))]
    # Clipped to FP32's finite range before the cast: an amount far above a card's 30-day mean would otherwise
    # overflow `amount_to_card_mean` to inf, which no JSON body (the predictor call, the debug features, the
    # inference log) can carry. Every input is finite (validation, finite online values and defaults), so
    # the only non-finite value a row could hold is that overflow, and the vectors are finite by construction.
    vectors = np.clip(np.asarray(vectorize(rows, defaults), dtype=np.float64), -FP32_MAX, FP32_MAX)
    vectors = vectors.astype(np.float32).tolist()
    return Assembled(
        vectors=vectors,
        missing=[list(r) for r in reasons],
        degraded=degraded,
        reasons=[{name: reason.value for name, reason in r.items()} for r in reasons],
        unknown_entities=[unknown_entities(r) for r in reasons],
    )


def unknown_entities(reasons: Mapping[str, MissingReason]) -> list[str]:
    """The entities whose every online feature is NOT_FOUND: the store has no row for them."""
    return [
        entity
        for entity, names in ENTITY_FEATURES.items()
        if all(reasons.get(name) == MissingReason.NOT_FOUND for name in names)
    ]


def decide(score: float, threshold: float) -> str:
    """Decline at or above the threshold: the threshold is the lowest fraud probability that declines."""
    return DECLINE if score >= threshold else APPROVE


def named_features(column_names: Sequence[str], vector: Sequence[float]) -> dict[str, float]:
    """A model input row by column name, as served (defaults applied, categoricals as bucket ids)."""
    return dict(zip(column_names, vector, strict=True))
