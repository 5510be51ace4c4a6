"""Batch feature pipeline: transactions -> the `card_activity` and `merchant_risk` feature tables.

These tables are Feast's batch sources (feature_repo/sources.py). Their timestamps are what makes the
point-in-time join honest, so the rules are strict:

- `card_activity` has one row per transaction, stamped at the transaction's time, holding the card's
  state *including* that transaction. Windows are half-open on the left, (t - w, t]. When one card has
  several transactions at the same instant, the order of (event_timestamp, transaction_id) decides
  which of them each row counts.
- `merchant_risk` has one row per merchant per day at 00:00 UTC, built only from what was known at that
  instant: transactions with event_timestamp < snapshot, and for the fraud rate only labels with
  label_timestamp <= snapshot. A label from the future can never reach a snapshot.

Everything is vectorised numpy on int64 microseconds; the default-size history takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR

CARD_ACTIVITY_FILE = "card_activity.parquet"
MERCHANT_RISK_FILE = "merchant_risk.parquet"
TRANSACTIONS_FILE = "transactions.parquet"
LIVE_TRANSACTIONS_GLOB = "transactions.live-*.parquet"
"""Live transactions whose labels arrived, appended beside TRANSACTIONS_FILE (flywheel_core.label_feed)."""

CARD_ACTIVITY_COLUMNS = (
    "card_id", "event_timestamp", "txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d",
    "distinct_countries_24h",
)
MERCHANT_RISK_COLUMNS = (
    "merchant_id", "event_timestamp", "merchant_txn_count_7d", "merchant_fraud_rate_30d",
    "merchant_amount_mean_30d",
)


def to_us(timestamps: pd.Series) -> np.ndarray:
    """int64 microseconds since the epoch of a timestamp column (naive values are taken as UTC)."""
    ts = pd.to_datetime(timestamps, utc=True)
    return ts.dt.as_unit("us").astype("int64").to_numpy()


def from_us(values: npt.ArrayLike) -> pd.Series:
    """The inverse of `to_us`: a timestamp[us, UTC] series."""
    return pd.Series(np.asarray(values, dtype="int64").astype("datetime64[us]")).dt.tz_localize("UTC")


def _window_start(group: np.ndarray, t_us: np.ndarray, window_us: int) -> np.ndarray:
    """For rows sorted by (group, t): index of the first row of the same group with t > t_i - window.

    Groups are laid end to end on one int64 axis, spaced further apart than any window, so a single
    searchsorted finds every window start at once.
    """
    if len(t_us) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(t_us.min())
    stride = int(t_us.max()) - t0 + window_us + 1
    if int(group.max()) * stride > np.iinfo(np.int64).max // 2:
        raise ValueError("too many groups x time span for the int64 window index; process fewer days at once")
    key = group.astype(np.int64) * stride + (t_us - t0)
    return np.searchsorted(key, key - window_us + 1, side="left")


def _window_sum(cumsum: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sum over rows [start_i, i] from a cumulative sum with a leading zero row."""
    end = np.arange(1, len(start) + 1)
    return cumsum[end] - cumsum[start]


def card_activity(transactions: pd.DataFrame) -> pd.DataFrame:
    """One row per transaction: the card's rolling state including it, stamped at its time."""
    frame = transactions[["transaction_id", "card_id", "event_timestamp", "amount", "country"]].copy()
    frame["_t"] = to_us(frame["event_timestamp"])
    frame = frame.sort_values(["card_id", "_t", "transaction_id"], kind="mergesort").reset_index(drop=True)
    card = pd.factorize(frame["card_id"])[0]
    t_us = frame["_t"].to_numpy()
    amount = frame["amount"].to_numpy(dtype="float64")
    position = np.arange(len(frame))
    amount_cumsum = np.concatenate([[0.0], np.cumsum(amount)])

    start_1h = _window_start(card, t_us, US_PER_HOUR)
    start_24h = _window_start(card, t_us, US_PER_DAY)
    start_30d = _window_start(card, t_us, 30 * US_PER_DAY)

    country = pd.factorize(frame["country"])[0]
    onehot = np.zeros((len(frame), max(country.max(initial=-1) + 1, 1)), dtype=np.int32)
    onehot[position, country] = 1
    country_cumsum = np.vstack([np.zeros((1, onehot.shape[1]), dtype=np.int64), np.cumsum(onehot, axis=0)])
    per_country_24h = country_cumsum[position + 1] - country_cumsum[start_24h]

    out = pd.DataFrame({
        "card_id": frame["card_id"],
        "event_timestamp": from_us(t_us),
        "txn_count_1h": (position - start_1h + 1).astype("int64"),
        "txn_count_24h": (position - start_24h + 1).astype("int64"),
        "amount_sum_24h": _window_sum(amount_cumsum, start_24h),
        "amount_mean_30d": _window_sum(amount_cumsum, start_30d) / (position - start_30d + 1),
        "distinct_countries_24h": (per_country_24h > 0).sum(axis=1).astype("int64"),
    })
    return out.sort_values(["event_timestamp", "card_id"], kind="mergesort").reset_index(drop=True)


def snapshot_days(transactions: pd.DataFrame) -> np.ndarray:
    """Snapshot instants (µs): every 00:00 UTC from the first transaction's day to the day after the last."""
    t_us = to_us(transactions["event_timestamp"])
    first = int(t_us.min()) // US_PER_DAY * US_PER_DAY
    last = int(t_us.max()) // US_PER_DAY * US_PER_DAY + US_PER_DAY
    return np.arange(first, last + 1, US_PER_DAY, dtype=np.int64)


def merchant_risk(transactions: pd.DataFrame, snapshots_us: np.ndarray | None = None) -> pd.DataFrame:
    """One row per merchant per daily snapshot, from transactions and labels known at the snapshot."""
    if snapshots_us is None:
        snapshots_us = snapshot_days(transactions)
    merchant_codes, merchants = pd.factorize(transactions["merchant_id"], sort=True)
    n = len(merchants)
    t_us = to_us(transactions["event_timestamp"])
    label_us = to_us(transactions["label_timestamp"])
    amount = transactions["amount"].to_numpy(dtype="float64")
    fraud = transactions["is_fraud"].to_numpy(dtype="int64") == 1

    counts_7d, fraud_rate, amount_mean = [], [], []
    for snapshot in snapshots_us:
        before = t_us < snapshot
        last_7d = before & (t_us >= snapshot - 7 * US_PER_DAY)
        last_30d = before & (t_us >= snapshot - 30 * US_PER_DAY)
        labelled = last_30d & (label_us <= snapshot)
        counts_7d.append(np.bincount(merchant_codes[last_7d], minlength=n))
        n_labelled = np.bincount(merchant_codes[labelled], minlength=n)
        n_fraud = np.bincount(merchant_codes[labelled & fraud], minlength=n)
        n_30d = np.bincount(merchant_codes[last_30d], minlength=n)
        sum_30d = np.bincount(merchant_codes[last_30d], weights=amount[last_30d], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraud_rate.append(np.where(n_labelled > 0, n_fraud / np.maximum(n_labelled, 1), np.nan))
            amount_mean.append(np.where(n_30d > 0, sum_30d / np.maximum(n_30d, 1), np.nan))

    return pd.DataFrame({
        "merchant_id": np.tile(np.asarray(merchants, dtype=object), len(snapshots_us)),
        "event_timestamp": from_us(np.repeat(snapshots_us, n)),
        "merchant_txn_count_7d": np.concatenate(counts_7d).astype("int64") if n else np.zeros(0, "int64"),
        "merchant_fraud_rate_30d": np.concatenate(fraud_rate) if n else np.zeros(0),
        "merchant_amount_mean_30d": np.concatenate(amount_mean) if n else np.zeros(0),
    })


def write_feature_tables(transactions: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Compute both feature tables and write them as parquet under `out_dir` (atomically, per file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in ((CARD_ACTIVITY_FILE, card_activity(transactions)),
                        (MERCHANT_RISK_FILE, merchant_risk(transactions))):
        written[name] = write_parquet(table, out_dir / name)
    return written


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a local parquet file into a DataFrame, as `pd.read_parquet` would, by path.

    Why not `pd.read_parquet`: for a local file it opens a Python file object and hands that to pyarrow, and
    a process that reads parquet that way then aborts at exit about one time in ten ("terminate called
    without an active exception", exit -6: pyarrow's thread pool torn down under the interpreter; apache/arrow
    issues 34314 and 50482). A short-lived command (the label feed's --once, the trainer's CLI) then fails
    after its work is done. Handing pyarrow the path does not abort (0 of 200 runs here against 23 of 200).
    ruff bans `pd.read_parquet` in this repository (ruff.toml) so no new reader brings the abort back.
    """
    return pq.read_table(str(path), columns=columns).to_pandas()


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
