"""Streaming card_activity: one transaction in, the card's new feature row out, by the batch rules.

`feature_pipeline.card_activity` computes every card's rolling state over a whole history at once. Live
traffic needs the same row one transaction at a time, the moment it is scored, so the card's *next*
transaction is served the state the point-in-time join gives training (the row of the card's previous
transaction, which includes it). `CardHistory` keeps each card's last 30 days of transactions and gives,
for each new one, exactly the row the batch pipeline would give it:

- windows are half-open on the left, (t - w, t], and include the transaction itself;
- transactions of one card at the same instant are ordered by (event_timestamp, transaction_id), and
  each row counts those up to and including its own: a late arrival gets the row its position gives it
  (rows already emitted for later transactions are not recomputed);
- a transaction id seen before is not counted twice: its row is computed again from the same state, so
  a retried delivery is harmless.

Counts are exact. Sums and means equal the batch's to rounding (the batch takes differences of one
running total over the whole table; this sums the window directly).

Domain code: no I/O, no framework. The features service owns one `CardHistory` (see its _stream module).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from .feature_pipeline import (
    CARD_ACTIVITY_COLUMNS,
    US_PER_DAY,
    US_PER_HOUR,
    from_us,
    to_us,
)

HORIZON_US = 30 * US_PER_DAY
"""The longest window (amount_mean_30d): older transactions of a card no longer count."""


@dataclass(frozen=True)
class CardTransaction:
    """What a card_activity row needs of a transaction."""

    transaction_id: str
    card_id: str
    event_us: int
    """event_timestamp, int64 microseconds since the epoch (UTC)."""
    amount: float
    country: str


@dataclass(frozen=True)
class CardActivityRow:
    """The card's state including one transaction, stamped at its time (a row of card_activity)."""

    card_id: str
    event_us: int
    txn_count_1h: int
    txn_count_24h: int
    amount_sum_24h: float
    amount_mean_30d: float
    distinct_countries_24h: int


class _Card:
    """One card's transactions within the horizon, sorted by (event_us, transaction_id)."""

    __slots__ = ("amounts", "countries", "keys", "times")

    def __init__(self) -> None:
        self.keys: list[tuple[int, str]] = []
        self.times: list[int] = []
        self.amounts: list[float] = []
        self.countries: list[str] = []

    def insert(self, txn: CardTransaction) -> int:
        """Position of the transaction, inserted unless its (time, id) is already there."""
        key = (txn.event_us, txn.transaction_id)
        at = bisect.bisect_left(self.keys, key)
        if at == len(self.keys) or self.keys[at] != key:
            self.keys.insert(at, key)
            self.times.insert(at, txn.event_us)
            self.amounts.insert(at, txn.amount)
            self.countries.insert(at, txn.country)
        return at

    def row(self, card_id: str, at: int) -> CardActivityRow:
        t = self.times[at]
        start_1h = bisect.bisect_right(self.times, t - US_PER_HOUR, 0, at)
        start_24h = bisect.bisect_right(self.times, t - US_PER_DAY, 0, at)
        start_30d = bisect.bisect_right(self.times, t - HORIZON_US, 0, at)
        end = at + 1
        return CardActivityRow(
            card_id=card_id,
            event_us=t,
            txn_count_1h=end - start_1h,
            txn_count_24h=end - start_24h,
            amount_sum_24h=float(sum(self.amounts[start_24h:end])),
            amount_mean_30d=float(sum(self.amounts[start_30d:end]) / (end - start_30d)),
            distinct_countries_24h=len(set(self.countries[start_24h:end])),
        )

    def prune(self) -> None:
        """Forget what is older than the horizon before the card's newest transaction."""
        cut = bisect.bisect_right(self.times, self.times[-1] - HORIZON_US)
        if cut:
            del self.keys[:cut], self.times[:cut], self.amounts[:cut], self.countries[:cut]


class CardHistory:
    """Every card's recent transactions; `add` gives the card_activity row of a new one.

    Not thread-safe: one writer (the caller serialises `add`).
    """

    def __init__(self) -> None:
        self._cards: dict[str, _Card] = {}

    def __len__(self) -> int:
        """Transactions held (all cards)."""
        return sum(len(card.keys) for card in self._cards.values())

    @property
    def cards(self) -> int:
        return len(self._cards)

    def knows(self, txn: CardTransaction) -> bool:
        """Whether this (time, id) is already held: a retried delivery."""
        card = self._cards.get(txn.card_id)
        if card is None:
            return False
        key = (txn.event_us, txn.transaction_id)
        at = bisect.bisect_left(card.keys, key)
        return at < len(card.keys) and card.keys[at] == key

    def is_newest(self, txn: CardTransaction) -> bool:
        """Whether this is its card's newest transaction held: only the newest row is the card's current state
        (the one to serve); a late arrival's or an old retry's row is history."""
        card = self._cards.get(txn.card_id)
        return card is not None and card.keys[-1] == (txn.event_us, txn.transaction_id)

    def add(self, txn: CardTransaction) -> CardActivityRow:
        card = self._cards.get(txn.card_id)
        if card is None:
            card = self._cards[txn.card_id] = _Card()
        at = card.insert(txn)
        row = card.row(txn.card_id, at)
        if at == len(card.keys) - 1:
            card.prune()
        return row

    def extend(self, transactions: Iterable[CardTransaction]) -> list[CardActivityRow]:
        return [self.add(txn) for txn in transactions]


def transactions_of(frame: pd.DataFrame) -> list[CardTransaction]:
    """A transactions frame (the simulator's columns) as CardTransactions, in (time, id) order."""
    t_us = to_us(frame["event_timestamp"])
    ordered = (
        pd.DataFrame({"t": t_us, "id": frame["transaction_id"].to_numpy()}, index=range(len(frame)))
        .sort_values(["t", "id"], kind="mergesort").index.to_numpy()
    )
    ids = frame["transaction_id"].to_numpy()
    cards = frame["card_id"].to_numpy()
    amounts = frame["amount"].to_numpy(dtype="float64")
    countries = frame["country"].to_numpy()
    return [
        CardTransaction(str(ids[i]), str(cards[i]), int(t_us[i]), float(amounts[i]), str(countries[i]))
        for i in ordered
    ]


def rows_frame(rows: Iterable[CardActivityRow]) -> pd.DataFrame:
    """Rows as a card_activity table: the batch pipeline's columns and dtypes."""
    rows = list(rows)
    return pd.DataFrame({
        "card_id": pd.Series([r.card_id for r in rows], dtype="object"),
        "event_timestamp": from_us([r.event_us for r in rows]),
        "txn_count_1h": pd.Series([r.txn_count_1h for r in rows], dtype="int64"),
        "txn_count_24h": pd.Series([r.txn_count_24h for r in rows], dtype="int64"),
        "amount_sum_24h": pd.Series([r.amount_sum_24h for r in rows], dtype="float64"),
        "amount_mean_30d": pd.Series([r.amount_mean_30d for r in rows], dtype="float64"),
        "distinct_countries_24h": pd.Series([r.distinct_countries_24h for r in rows], dtype="int64"),
    }, columns=list(CARD_ACTIVITY_COLUMNS))
