"""The stream step: live transactions in, each card's new card_activity row out to both stores.

Without it the online card_activity rows are what the last materialization computed and never move,
while training joins each transaction to the card's state just before it (the row of the card's previous
transaction, which includes that transaction): unchanged traffic then looks drifted. `POST
/stream/transactions` (features write token; the transformer posts what it has scored) takes transactions,
computes each one's row with flywheel_core.card_stream (the batch pipeline's windows and rules), and

- online: writes the rows to the views `card_activity_push` feeds before it answers, so the card's next lookup
  is served the new state: what Feast's push (PushMode.ONLINE) writes, one write per post, without the registry
  reads that made Feast's push most of the service's CPU (see _online_push);
- offline: appends them as parquet parts beside the batch table, `card_activity.stream-<first>-<last>.parquet`
  (log line numbers), which the batch source's glob (feature_repo/sources.py) gives DuckDB, so training
  sees the same rows. Feast's PushMode.OFFLINE would rewrite card_activity.parquet whole on every push.
  Parts are written every STREAM_FLUSH_ROWS rows, when STREAM_FLUSH_S has passed since the oldest unwritten
  row (checked on the next post), and at shutdown;
- log: before any of that, the transactions are appended to `<data>/stream/transactions.jsonl` (one JSON
  object a line, flushed per post). At start the card state is rebuilt from transactions.parquet (the
  history) and this log, and rows the log has but no part covers are computed again and written, so a
  restart or a crash loses no row.

Single writer: the state is this process's memory and the log its file. One process (WORKERS=1) may run
the stream step per data directory; `/stream/transactions` is refused (409) in a server started with
WORKERS > 1. In a cluster that means one replica for the stream step with the log on a persistent volume,
the online store shared (Redis), and the offline parts on storage the trainer reads (see docs).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from feast import FeatureStore
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError

from flywheel_core import card_stream
from flywheel_core.feature_pipeline import TRANSACTIONS_FILE, read_parquet, write_parquet

from ._errors import InvalidStream
from ._merchant_stream import MerchantSnapshots
from ._online_push import OnlinePush

PUSH_SOURCE = "card_activity_push"
LOG_NAME = "transactions.jsonl"
PART_GLOB = "card_activity.stream-*.parquet"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONLINE_COLUMNS = ("card_id", "txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d",
                   "distinct_countries_24h")
"""A card row's join key and features, as CardActivityRow names them (card_activity's columns but the time)."""
_PART = re.compile(r"^card_activity\.stream-(\d{10})-(\d{10})\.parquet$")

TRANSACTIONS = Counter(
    "flywheel_features_stream_transactions_total",
    "Live transactions taken by the stream step (logged, their card rows pushed online).",
)
OFFLINE_ROWS = Counter(
    "flywheel_features_stream_offline_rows_total",
    "card_activity rows the stream step appended to the offline store (parquet parts).",
)

log = logging.getLogger("flywheel_features.stream")


class StreamTransaction(BaseModel):
    """What the stream step needs of a scored transaction; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: Annotated[str, Strict(), Field(min_length=1, max_length=128)]
    card_id: Annotated[str, Strict(), Field(min_length=1, max_length=128)]
    amount: Annotated[float, Strict(), Field(allow_inf_nan=False)]
    country: Annotated[str, Strict(), Field(min_length=1, max_length=64)]
    merchant_id: Annotated[str, Strict(), Field(min_length=1, max_length=128)] | None = None
    """Optional: without it the transaction counts for its card but for no merchant snapshot."""
    event_timestamp: datetime
    """ISO-8601; a naive stamp is UTC, as everywhere in the data contract."""

    def card_transaction(self) -> card_stream.CardTransaction:
        ts = self.event_timestamp if self.event_timestamp.tzinfo else self.event_timestamp.replace(tzinfo=UTC)
        event_us = (ts - _EPOCH) // timedelta(microseconds=1)
        return card_stream.CardTransaction(self.transaction_id, self.card_id, event_us, self.amount, self.country)


class StreamBody(BaseModel):
    """`{"transactions": [...]}`, 1 to 1000 of them."""

    model_config = ConfigDict(extra="ignore")

    transactions: Annotated[list[StreamTransaction], Field(min_length=1, max_length=1000)]


_BODY = TypeAdapter(StreamBody)


@dataclass(frozen=True)
class Posted:
    """The posted transactions and, position for position, their merchants (None when not sent)."""

    cards: list[card_stream.CardTransaction]
    merchants: list[str | None]


def parse_body(raw: bytes) -> Posted:
    """The posted transactions, or InvalidStream (422) naming the first bad field."""
    try:
        body = _BODY.validate_json(raw)
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise InvalidStream(
            f"{where}: {error['msg']} (send {{\"transactions\": [{{transaction_id, card_id, amount, country, "
            "event_timestamp}, ...]}})",
            field=where,
        ) from None
    return Posted([t.card_transaction() for t in body.transactions], [t.merchant_id for t in body.transactions])


class CardStream:
    """The card state, its log and the offline parts of one data directory (one writer)."""

    def __init__(self, store: FeatureStore, data_dir: Path, flush_rows: int, flush_s: float) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir / "stream" / LOG_NAME
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.history = card_stream.CardHistory()
        self._lock = threading.Lock()
        self._logged = 0
        """Lines in the log (the next transaction's line number)."""
        self._pending: list[card_stream.CardActivityRow] = []
        self._pending_from = 0
        """Log line of the first pending row."""
        self._pending_since = 0.0
        self.merchants = MerchantSnapshots(store, self.data_dir)
        self.online = OnlinePush(store, PUSH_SOURCE)

    def open(self) -> CardStream:
        """Rebuild the card state from the history and the log; write the rows no part holds yet."""
        started = time.monotonic()
        history = self.data_dir / TRANSACTIONS_FILE
        if history.exists():
            frame = read_parquet(
                history, columns=["transaction_id", "card_id", "event_timestamp", "amount", "country"]
            )
            self.history.extend(card_stream.transactions_of(frame))
        covered = max((int(m.group(2)) for p in self.data_dir.glob(PART_GLOB) if (m := _PART.match(p.name))), default=0)
        self.merchants.open()
        logged = self._read_log()
        self._logged = len(logged)
        self._pending_from = min(covered, self._logged)
        unpushed: list[card_stream.CardTransaction] = []
        for line, (txn, merchant) in enumerate(logged):
            self.merchants.add(txn, merchant)
            row = self.history.add(txn)
            if line >= covered:
                self._pending.append(row)
                unpushed.append(txn)
        # They may not have reached the online store before the stop: each card's current state goes there.
        current = [row for txn, row in zip(unpushed, self._pending, strict=True) if self.history.is_newest(txn)]
        if current:
            self._push_online(current)
        self._flush()
        if logged:
            self.merchants.advance(max(txn.event_us for txn, _ in logged))
        log.info(
            "stream step: %d transactions of %d cards from %s and %d logged live ones in %.1f s",
            len(self.history), self.history.cards, history.name, self._logged, time.monotonic() - started,
        )
        return self

    def _read_log(self) -> list[tuple[card_stream.CardTransaction, str | None]]:
        """The logged transactions; a last line cut by a crash (its post was never answered) is cut off."""
        if not self.log_path.exists():
            return []
        out = []
        good = 0
        with self.log_path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    entry = json.loads(raw)
                    merchant = entry.pop("merchant_id", None)
                    out.append((card_stream.CardTransaction(**entry), merchant))
                except (ValueError, TypeError):
                    break
                good += len(raw)
        if good < self.log_path.stat().st_size:
            log.warning("stream log %s: dropping %d bytes after the last whole line (a write cut by a crash)",
                        self.log_path, self.log_path.stat().st_size - good)
            with self.log_path.open("r+b") as handle:
                handle.truncate(good)
        return out

    def ingest(self, transactions: list[card_stream.CardTransaction],
               merchants: list[str | None] | None = None) -> int:
        """Log, compute, push online (under one lock, so a card's pushes never reorder). A transaction already
        held (a retry) gets its row pushed again but is neither logged nor written offline twice.

        A crash after the log and before the push loses nothing: `open` pushes the rows it recomputes. Returns how
        many transactions were taken (all of them)."""
        merchant_of = dict(zip((t.transaction_id for t in transactions), merchants or [], strict=False))
        with self._lock:
            fresh = [t for t in transactions if not self.history.knows(t)]
            is_fresh = set(fresh)
            if fresh:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.log_path.open("ab") as handle:
                    handle.write(b"".join(
                        json.dumps(_as_dict(t, merchant_of.get(t.transaction_id)), separators=(",", ":")).encode()
                        + b"\n" for t in fresh))
                for t in fresh:
                    self.merchants.add(t, merchant_of.get(t.transaction_id))
            rows = [self.history.add(t) for t in transactions]
            # Online holds each card's current state: a late arrival's or an old retry's row would put the card
            # back in time (Feast's SQLite store overwrites whatever it is given), so only newest rows go there.
            current = [row for t, row in zip(transactions, rows, strict=True) if self.history.is_newest(t)]
            if fresh:
                if not self._pending:
                    self._pending_since = time.monotonic()
                    self._pending_from = self._logged
                self._logged += len(fresh)
                self._pending.extend(row for t, row in zip(transactions, rows, strict=True) if t in is_fresh)
            if current:
                self._push_online(current)
            # After the cards, before the count a caller may wait on: a snapshot needs only what came before its
            # 00:00, all of which is in.
            self.merchants.advance(max(t.event_us for t in transactions))
            TRANSACTIONS.inc(len(transactions))
            if self._pending and (len(self._pending) >= self.flush_rows
                                  or time.monotonic() - self._pending_since >= self.flush_s):
                self._flush()
        return len(transactions)

    def _push_online(self, rows: list[card_stream.CardActivityRow]) -> None:
        """One online write for the rows (see _online_push: Feast's push without its per-call registry reads)."""
        self.online.push({name: [getattr(row, name) for row in rows] for name in _ONLINE_COLUMNS},
                         [_NAIVE_EPOCH + timedelta(microseconds=row.event_us) for row in rows])

    def flush(self) -> None:
        """Write the pending rows as one offline part (at shutdown, and by tests)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        first, last = self._pending_from, self._pending_from + len(self._pending)
        write_parquet(card_stream.rows_frame(self._pending),
                      self.data_dir / f"card_activity.stream-{first:010d}-{last:010d}.parquet")
        OFFLINE_ROWS.inc(len(self._pending))
        self._pending = []
        self._pending_from = last


def _as_dict(txn: card_stream.CardTransaction, merchant_id: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"transaction_id": txn.transaction_id, "card_id": txn.card_id, "event_us": txn.event_us,
                             "amount": txn.amount, "country": txn.country}
    return {**entry, "merchant_id": merchant_id} if merchant_id else entry
