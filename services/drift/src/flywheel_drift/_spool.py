"""The spool: every accepted event is on disk before the sender gets its 2xx, and is replayed on start.

SQLite in WAL mode (`spool.db` under FLYWHEEL_DRIFT_SPOOL_DIR). One writer thread takes events from many
concurrent requests and commits them in one transaction (group commit), so durability costs one fsync per
burst rather than one per event. Committed events are handed to the processor in sequence order.

A checkpoint stores the analysis state and the sequence number it includes; saving one deletes the events
it covers, so the spool holds only what a restart must replay (bounded by the checkpoint interval).
"""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    received_at REAL NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    saved_at REAL NOT NULL,
    state BLOB NOT NULL
);
"""
MAX_GROUP = 512


@dataclass
class SpooledEvent:
    """An accepted event as stored; `parsed` is what the request handler already made of it."""

    kind: str
    received_at: float
    headers: bytes
    body: bytes
    parsed: Any = None
    seq: int = 0


def connect(path: Path, durable: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    return conn


class Spool:
    def __init__(self, directory: Path, durable: bool, on_committed: Callable[[SpooledEvent], None]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spool.db"
        self._write = connect(self.path, durable)
        self._write.executescript(SCHEMA)
        self._read = connect(self.path, durable)
        self._read_lock = threading.Lock()
        self._on_committed = on_committed
        self._queue: queue.Queue[tuple[SpooledEvent, concurrent.futures.Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="drift-spool-writer", daemon=True)
        self._thread.start()

    def append(self, event: SpooledEvent) -> concurrent.futures.Future[int]:
        """Queue an event for the next group commit; the future resolves to its sequence number."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._queue.put((event, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                group.append(more)
            self._commit(group)

    def _commit(self, group: list[tuple[SpooledEvent, concurrent.futures.Future[int]]]) -> None:
        try:
            self._write.execute("BEGIN IMMEDIATE")
            for event, _ in group:
                cursor = self._write.execute(
                    "INSERT INTO events (kind, received_at, headers, body) VALUES (?, ?, ?, ?)",
                    (event.kind, event.received_at, event.headers, event.body))
                event.seq = int(cursor.lastrowid or 0)
            self._write.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self._write.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for _, future in group:
                future.set_exception(e)
            return
        for event, future in group:
            self._on_committed(event)  # before the 2xx: the processor sees events in sequence order
            future.set_result(event.seq)

    def replay(self, after: int) -> Iterator[SpooledEvent]:
        """Events with seq > `after`, in order (read in pages, so memory stays bounded)."""
        last = after
        while True:
            with self._read_lock:
                rows = self._read.execute(
                    "SELECT seq, kind, received_at, headers, body FROM events WHERE seq > ? ORDER BY seq LIMIT 1000",
                    (last,)).fetchall()
            if not rows:
                return
            for seq, kind, received_at, headers, body in rows:
                yield SpooledEvent(kind, received_at, bytes(headers), bytes(body), seq=seq)
                last = seq

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        with self._read_lock:
            row = self._read.execute("SELECT seq, state FROM checkpoint WHERE id = 1").fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def save_checkpoint(self, seq: int, state: bytes, saved_at: float) -> None:
        """Store the state that includes every event up to `seq`, and drop those events."""
        with self._read_lock:
            self._read.execute("BEGIN IMMEDIATE")
            try:
                self._read.execute(
                    "INSERT INTO checkpoint (id, seq, saved_at, state) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, saved_at = excluded.saved_at, "
                    "state = excluded.state", (seq, saved_at, state))
                self._read.execute("DELETE FROM events WHERE seq <= ?", (seq,))
                self._read.execute("COMMIT")
            except sqlite3.Error:
                self._read.execute("ROLLBACK")
                raise

    def pending_events(self) -> int:
        with self._read_lock:
            return int(self._read.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._write.close()
        self._read.close()
