"""Daily merchant snapshots in the stream's time: merchant_risk moves on as live traffic does.

merchant_risk is a daily snapshot (00:00 UTC) computed by the batch pipeline from the history. Live traffic
goes on past the history's last snapshot, and the view's ttl (2 days) then makes every merchant value missing,
in training's point-in-time join and at serving alike: unchanged traffic would look drifted after two days.
So the stream step, which sees every scored transaction, takes the batch job's place for live time: when a
transaction arrives past the next 00:00 after the newest snapshot, it computes that day's snapshot (and any
skipped ones) with `flywheel_core.feature_pipeline.merchant_risk` -- the batch rules -- over the history and
the live transactions, with the labels known at the snapshot (the history's, and live ones the label feed
appended as transactions.live-*.parquet), then

- online: pushes the newest snapshot's rows through `merchant_risk_push` (PushMode.ONLINE);
- offline: writes them as `merchant_risk.stream-<first day>-<last day>.parquet` beside merchant_risk.parquet,
  which the batch source's glob gives training.

Time is the transactions' (simulated time runs ahead of the clock). The first transaction after a 00:00 is
scored before that day's snapshot exists (it triggers it): it is served the previous day's, where training
joins the new one; every later transaction of the day is served what training joins.

Restart: the newest snapshot is read from the parts, the live transactions from the stream log (with their
merchant), so a snapshot is neither lost nor written twice. One writer, as the card stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from prometheus_client import Counter

from flywheel_core import card_stream, feature_pipeline
from flywheel_core.feature_pipeline import (
    LIVE_TRANSACTIONS_GLOB,
    MERCHANT_RISK_FILE,
    TRANSACTIONS_FILE,
    US_PER_DAY,
    read_parquet,
    write_parquet,
)

PUSH_SOURCE = "merchant_risk_push"
PART_GLOB = "merchant_risk.stream-*.parquet"
_NEVER_US = 100 * 365 * US_PER_DAY
"""Label delay of a live transaction whose label has not arrived: never known at any snapshot."""
_MAX_DAYS_AT_ONCE = 400
"""Most snapshots one transaction may call for (a timestamp years ahead would otherwise compute thousands)."""

SNAPSHOTS = Counter("flywheel_features_stream_merchant_snapshots_total",
                    "Daily merchant_risk snapshots the stream step computed from live traffic.")

log = logging.getLogger("flywheel_features.stream")


@dataclass(frozen=True)
class _Live:
    transaction_id: str
    merchant_id: str
    event_us: int
    amount: float


class MerchantSnapshots:
    """The live transactions and the newest snapshot instant of one data directory (one writer)."""

    def __init__(self, store: FeatureStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self._live: dict[str, _Live] = {}
        self._history: pd.DataFrame | None = None
        self.newest_us: int | None = None
        """The newest snapshot instant (µs) in the offline store; None without any merchant_risk table."""

    def open(self) -> MerchantSnapshots:
        history = self.data_dir / TRANSACTIONS_FILE
        if history.exists():
            self._history = read_parquet(history, columns=[
                "transaction_id", "merchant_id", "event_timestamp", "amount", "is_fraud", "label_timestamp"])
        stamps = []
        for path in [self.data_dir / MERCHANT_RISK_FILE, *sorted(self.data_dir.glob(PART_GLOB))]:
            if path.exists():
                column = read_parquet(path, columns=["event_timestamp"])["event_timestamp"]
                if len(column):
                    stamps.append(int(feature_pipeline.to_us(column).max()))
        self.newest_us = max(stamps) if stamps else None
        return self

    def add(self, txn: card_stream.CardTransaction, merchant_id: str | None) -> None:
        """Remember a live transaction (one without a merchant cannot count for any)."""
        if merchant_id:
            self._live[txn.transaction_id] = _Live(txn.transaction_id, merchant_id, txn.event_us, txn.amount)

    def advance(self, now_us: int) -> int:
        """Compute, push and write the snapshots due by `now_us` (every 00:00 after the newest, up to now_us);
        returns how many."""
        if self.newest_us is None or self._history is None:
            return 0
        due = np.arange(self.newest_us + US_PER_DAY, now_us + 1, US_PER_DAY, dtype=np.int64)[:_MAX_DAYS_AT_ONCE]
        if not len(due):
            return 0
        rows = feature_pipeline.merchant_risk(self._transactions(), due)
        newest = rows[feature_pipeline.to_us(rows["event_timestamp"]) == int(due[-1])]
        self.store.push(PUSH_SOURCE, newest.reset_index(drop=True), to=PushMode.ONLINE)
        first, last = (pd.Timestamp(int(t), unit="us").strftime("%Y%m%d") for t in (due[0], due[-1]))
        write_parquet(rows.reset_index(drop=True), self.data_dir / f"merchant_risk.stream-{first}-{last}.parquet")
        self.newest_us = int(due[-1])
        SNAPSHOTS.inc(len(due))
        log.info("stream step: merchant_risk snapshot%s %s%s from %d live transactions",
                 "s" if len(due) > 1 else "", first, f"..{last}" if len(due) > 1 else "", len(self._live))
        return len(due)

    def _transactions(self) -> pd.DataFrame:
        """The history and the live transactions, each with the label known for it (or none yet)."""
        assert self._history is not None
        live = pd.DataFrame({
            "transaction_id": [t.transaction_id for t in self._live.values()],
            "merchant_id": [t.merchant_id for t in self._live.values()],
            "event_timestamp": feature_pipeline.from_us(np.array([t.event_us for t in self._live.values()],
                                                                 dtype=np.int64)),
            "amount": np.array([t.amount for t in self._live.values()], dtype="float64"),
        })
        live["is_fraud"] = 0
        live["label_timestamp"] = feature_pipeline.from_us(
            feature_pipeline.to_us(live["event_timestamp"]) + _NEVER_US) if len(live) else live["event_timestamp"]
        labelled = [read_parquet(p, columns=["transaction_id", "is_fraud", "label_timestamp"])
                    for p in sorted(self.data_dir.glob(LIVE_TRANSACTIONS_GLOB))]
        if labelled and len(live):
            known = pd.concat(labelled, ignore_index=True).drop_duplicates("transaction_id").set_index("transaction_id")
            hit = live["transaction_id"].isin(known.index)
            ids = live.loc[hit, "transaction_id"]
            live.loc[hit, "is_fraud"] = known.loc[ids, "is_fraud"].to_numpy()
            live.loc[hit, "label_timestamp"] = pd.to_datetime(known.loc[ids, "label_timestamp"], utc=True).to_numpy()
        history = self._history[~self._history["transaction_id"].isin(self._live)]
        frame = pd.concat([history, live], ignore_index=True) if len(live) else history
        for column in ("event_timestamp", "label_timestamp"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

