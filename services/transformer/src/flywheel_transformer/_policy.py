"""The domain policy on raw transactions: what cannot be a real card authorization (refused with a 422 naming
the field, never scored) and what the model never saw in training (scored, but flagged `unseen`).

Impossible (422 `impossible_value`), decided as a fraud team would:

- `amount` below 0: a refund or reversal is not an authorization to score. An amount of 0 is possible:
  zero-amount authorizations verify a card, and card testers use them, so refusing them would hide exactly
  that traffic from the model.
- `amount` above MAX_AMOUNT: no authorization is that large; it is a unit bug upstream (minor units sent as
  major). The ceiling also keeps every amount-derived model input a finite FP32 number.
- `event_timestamp` more than MAX_FUTURE_SKEW_S ahead of this server's clock, or more than MAX_EVENT_AGE_S
  behind it: a broken stamp, not clock skew or a late authorization.

Unseen (`unseen`: sorted field names per prediction, `[]` when none): a value outside what the model version
was trained on, from its metadata's `training_domain` (flywheel_core.model_repo.TrainingDomain), never from
code: a categorical of flywheel_core.schema.DOMAIN_CATEGORICALS not in the vocabulary (exact string: the model
hashes the exact value, so "us" is as new to it as "XX"), or an `amount` below min / (1 + margin) or above
max * (1 + margin). Such a transaction is still scored (refusing payments because a new country appeared
would be worse than scoring them), but the answer, the inference log and a metric say so. A version whose
metadata has no `training_domain` (published before it existed) gets no unseen checks: always `[]`.

Domain code: no framework, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flywheel_core.model_repo import TrainingDomain
from flywheel_core.schema import DOMAIN_CATEGORICALS, DOMAIN_NUMERICS

from ._errors import ImpossibleValue
from ._validation import MAX_REPORTED_PROBLEMS, Transaction


@dataclass(frozen=True)
class Limits:
    """What a possible transaction stays within (settings MAX_AMOUNT, MAX_FUTURE_SKEW_S, MAX_EVENT_AGE_S)."""

    max_amount: float
    max_future_skew: timedelta
    max_event_age: timedelta


def check_possible(transactions: Sequence[Transaction], limits: Limits, now: datetime) -> None:
    """Raise ImpossibleValue (422) for the first impossible value, listing up to 20 in `problems`."""
    problems: list[ImpossibleValue] = []
    for index, transaction in enumerate(transactions):
        for field, message in _impossible(transaction, limits, now):
            problems.append(ImpossibleValue(message, field=field, index=index))
        if len(problems) >= MAX_REPORTED_PROBLEMS:
            break
    if not problems:
        return
    first = problems[0]
    first.problems = [{"index": p.index, "field": p.field, "error": p.reason} for p in problems[:MAX_REPORTED_PROBLEMS]]
    raise first


def _impossible(transaction: Transaction, limits: Limits, now: datetime) -> list[tuple[str, str]]:
    found = []
    amount = transaction.amount
    if amount < 0:
        found.append(("amount", f"is {amount:g}: an authorization cannot be negative (refunds are not scored here)"))
    elif amount > limits.max_amount:
        found.append(
            (
                "amount",
                f"is {amount:g}, above the largest possible amount {limits.max_amount:g} "
                "(FLYWHEEL_TRANSFORMER_MAX_AMOUNT): check the units",
            )
        )
    stamp = transaction.event_timestamp
    if stamp - now > limits.max_future_skew:
        found.append(
            (
                "event_timestamp",
                f"'{stamp.isoformat()}' is {(stamp - now).total_seconds():.0f} s ahead of this server's clock; at most "
                f"{limits.max_future_skew.total_seconds():g} s is clock skew (FLYWHEEL_TRANSFORMER_MAX_FUTURE_SKEW_S)",
            )
        )
    elif now - stamp > limits.max_event_age:
        found.append(
            (
                "event_timestamp",
                f"'{stamp.isoformat()}' is {(now - stamp).days} days old; older than "
                f"{limits.max_event_age.total_seconds():g} s is not scored (FLYWHEEL_TRANSFORMER_MAX_EVENT_AGE_S)",
            )
        )
    return found


@dataclass(frozen=True)
class SeenValues:
    """A model version's training domain, ready for lookups."""

    vocabularies: Mapping[str, frozenset[str]]
    """Categorical field -> every value the training rows held."""
    ranges: Mapping[str, tuple[float, float]]
    """Numeric field -> (min, max) over the training rows."""

    @classmethod
    def of(cls, domain: TrainingDomain) -> SeenValues:
        return cls(
            vocabularies={name: frozenset(values) for name, values in domain.vocabularies.items()},
            ranges={name: (r.min, r.max) for name, r in domain.ranges.items()},
        )


def unseen_fields(transaction: Transaction, seen: SeenValues | None, margin: float) -> list[str]:
    """The fields of `transaction` whose value the model never saw in training, sorted; [] without a domain.

    Only the fields the domain records are checked: a field the trainer did not record is not flagged."""
    if seen is None:
        return []
    found = [
        name
        for name in DOMAIN_CATEGORICALS
        if name in seen.vocabularies and getattr(transaction, name) not in seen.vocabularies[name]
    ]
    for name in DOMAIN_NUMERICS:
        if name in seen.ranges:
            low, high = seen.ranges[name]
            value = getattr(transaction, name)
            if value < low / (1.0 + margin) or value > high * (1.0 + margin):
                found.append(name)
    return sorted(found)
