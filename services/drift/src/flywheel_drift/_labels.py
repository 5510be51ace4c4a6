"""Logged predictions and their delayed labels, joined on the row key (SQLite `labels.db`).

Labels arrive days after the prediction (chargebacks), so predictions live on disk, bounded by
FLYWHEEL_DRIFT_PREDICTION_STORE_ROWS (oldest deleted first). A label is idempotent: the first value for a
key wins, the same value again changes nothing (a duplicate), a different value is refused (a conflict)
and reported. A label that comes before its prediction waits in `orphan_labels` and is joined when the
prediction is logged; waiting labels are bounded (FLYWHEEL_DRIFT_MAX_ORPHAN_LABELS, oldest deleted
first) because their keys are whatever the caller sent. `counts` keeps per-version totals so label
coverage costs no table scan.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._payloads import Label
from ._spool import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    key TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    probability REAL,
    time REAL NOT NULL,
    label INTEGER,
    label_at REAL
);
DROP INDEX IF EXISTS predictions_labelled;
CREATE INDEX IF NOT EXISTS predictions_by_class ON predictions (model, version, label, time) WHERE label IS NOT NULL;
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (model, version, time) WHERE label IS NOT NULL;
CREATE TABLE IF NOT EXISTS counts (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    predictions INTEGER NOT NULL DEFAULT 0,
    labelled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS orphan_labels (
    key TEXT PRIMARY KEY,
    label INTEGER NOT NULL,
    received_at REAL NOT NULL
);
"""


class LabelStore:
    def __init__(self, directory: Path, durable: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._conn = connect(directory / "labels.db", durable)
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.orphans = int(self._conn.execute("SELECT COUNT(*) FROM orphan_labels").fetchone()[0])
        """Labels waiting for their prediction (as of the last `reconcile`)."""
        self._grouped = False

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Hold the store for a run of `add_predictions` and commit them once, at the end (the analysis thread, for
        the inference events it finds queued together). A commit per record was a quarter of the service's CPU
        under load; the spool is what makes an event durable, and replaying it is harmless (INSERT OR IGNORE)."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._grouped = True
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._grouped = False

    def add_predictions(self, model: str, version: str, keys: Sequence[str], probabilities: np.ndarray | None,
                        time: float) -> int:
        """Log rows for the label join; a key seen before is ignored (replay after a restart is harmless)."""
        probs: list[float | None] = [None] * len(keys) if probabilities is None else [float(p) for p in probabilities]
        if self._grouped:  # inside grouped(), on the thread that holds the lock and the transaction
            return self._insert(model, version, keys, probs, time)
        with self._lock:
            self._conn.execute("BEGIN")
            inserted = self._insert(model, version, keys, probs, time)
            self._conn.execute("COMMIT")
        return inserted

    def _insert(self, model: str, version: str, keys: Sequence[str], probs: list[float | None], time: float) -> int:
        before = self._conn.total_changes
        self._conn.executemany(
            "INSERT OR IGNORE INTO predictions (key, model, version, probability, time) VALUES (?, ?, ?, ?, ?)",
            [(k, model, version, p, time) for k, p in zip(keys, probs, strict=True)])
        inserted = self._conn.total_changes - before
        if inserted:
            self._bump(model, version, inserted, 0)
        return inserted

    def _bump(self, model: str, version: str, predictions: int, labelled: int) -> None:
        self._conn.execute(
            "INSERT INTO counts (model, version, predictions, labelled) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(model, version) DO UPDATE SET predictions = predictions + excluded.predictions, "
            "labelled = labelled + excluded.labelled", (model, version, predictions, labelled))

    def add_labels(self, labels: Sequence[Label], now: float, max_orphans: int | None = None) -> dict[str, Any]:
        """Join labels to predictions; returns how many were new, duplicates, conflicts and not yet matched,
        and (`evicted`) how many waiting labels went, oldest first, to keep at most `max_orphans`."""
        out: dict[str, Any] = {"accepted": 0, "duplicates": 0, "conflicts": [], "unmatched": 0, "versions": {},
                               "evicted": 0}
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for item in labels:
                    row = self._conn.execute(
                        "SELECT model, version, label FROM predictions WHERE key = ?", (item.key,)).fetchone()
                    if row is not None:
                        model, version, existing = row
                        if existing is None:
                            self._conn.execute("UPDATE predictions SET label = ?, label_at = ? WHERE key = ?",
                                               (item.label, now, item.key))
                            self._bump(model, version, 0, 1)
                            out["accepted"] += 1
                            out["versions"][(model, version)] = out["versions"].get((model, version), 0) + 1
                        elif existing == item.label:
                            out["duplicates"] += 1
                        else:
                            out["conflicts"].append(item.key)
                        continue
                    orphan = self._conn.execute("SELECT label FROM orphan_labels WHERE key = ?", (item.key,)).fetchone()
                    if orphan is None:
                        self._conn.execute("INSERT INTO orphan_labels (key, label, received_at) VALUES (?, ?, ?)",
                                           (item.key, item.label, now))
                        out["unmatched"] += 1
                    elif orphan[0] == item.label:
                        out["duplicates"] += 1
                    else:
                        out["conflicts"].append(item.key)
                self.orphans += out["unmatched"]
                if max_orphans is not None and self.orphans > max_orphans:
                    # rowid follows insertion, so the smallest rowids are the labels waiting longest
                    out["evicted"] = self._conn.execute(
                        "DELETE FROM orphan_labels WHERE rowid IN "
                        "(SELECT rowid FROM orphan_labels ORDER BY rowid LIMIT ?)",
                        (self.orphans - max_orphans,)).rowcount
                    self.orphans -= out["evicted"]
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise
        return out

    def reconcile(self, now: float, orphan_ttl_s: float) -> set[tuple[str, str]]:
        """Join waiting labels to predictions logged since; drop orphans older than the TTL. Returns the
        versions that gained labels."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            rows = self._conn.execute(
                "SELECT p.key, p.model, p.version, o.label FROM orphan_labels o JOIN predictions p ON p.key = o.key "
                "WHERE p.label IS NULL").fetchall()
            for key, model, version, label in rows:
                self._conn.execute("UPDATE predictions SET label = ?, label_at = ? WHERE key = ?", (label, now, key))
                self._bump(model, version, 0, 1)
            self._conn.execute("DELETE FROM orphan_labels WHERE key IN (SELECT key FROM predictions)")
            self._conn.execute("DELETE FROM orphan_labels WHERE received_at < ?", (now - orphan_ttl_s,))
            self._conn.execute("COMMIT")
            self.orphans = int(self._conn.execute("SELECT COUNT(*) FROM orphan_labels").fetchone()[0])
        return {(model, version) for _, model, version, _ in rows}

    def recent_labelled(self, model: str, version: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) of a version's `limit` newest labelled predictions, by prediction time, up to
        the label frontier: the newest prediction of the class whose labels come last.

        Why not the labels that arrived last: the classes come at different delays (a fraud is known within days,
        a legitimate transaction when its chargeback window closes), so the newest labels are the slow class's old
        predictions beside the fast class's recent ones. When the fraud labels start before the legitimate ones,
        such a window is nearly all fraud and reads a PR-AUC far above the truth. Predictions no newer than the
        newest labelled one of every class have had every class's labels come; that cohort is a fair sample. (Its
        price: the window lags by the slowest class's delay. With one class labelled so far, the frontier is that
        class's newest prediction and the metrics wait for the other, `_performance.evaluate`.)
        """
        with self._lock:
            newest = [self._conn.execute(
                "SELECT MAX(time) FROM predictions WHERE model = ? AND version = ? AND label = ?",
                (model, version, label)).fetchone()[0] for label in (0, 1)]
            known = [t for t in newest if t is not None]
            if not known:
                return np.zeros(0, dtype=np.int64), np.zeros(0)
            rows = self._conn.execute(
                "SELECT label, probability FROM predictions WHERE model = ? AND version = ? AND label IS NOT NULL "
                "AND probability IS NOT NULL AND time <= ? ORDER BY time DESC LIMIT ?",
                (model, version, min(known), limit)).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        array = np.asarray(rows, dtype=np.float64)
        return array[:, 0].astype(np.int64), array[:, 1]

    def totals(self, model: str, version: str) -> tuple[int, int]:
        """(predictions, labelled) kept for a version."""
        with self._lock:
            row = self._conn.execute("SELECT predictions, labelled FROM counts WHERE model = ? AND version = ?",
                                     (model, version)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def enforce_retention(self, max_rows: int) -> int:
        """Delete the oldest predictions beyond `max_rows`; returns how many went."""
        with self._lock:
            last = self._conn.execute("SELECT MAX(rowid) FROM predictions").fetchone()[0]
            if last is None:
                return 0
            cutoff = int(last) - max_rows
            if cutoff <= 0:
                return 0
            self._conn.execute("BEGIN IMMEDIATE")
            gone = self._conn.execute(
                "SELECT model, version, COUNT(*), COUNT(label) FROM predictions WHERE rowid <= ? "
                "GROUP BY model, version",
                (cutoff,)).fetchall()
            for model, version, n, labelled in gone:
                self._bump(model, version, -int(n), -int(labelled))
            self._conn.execute("DELETE FROM predictions WHERE rowid <= ?", (cutoff,))
            self._conn.execute("COMMIT")
        return sum(int(n) for _, _, n, _ in gone)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
