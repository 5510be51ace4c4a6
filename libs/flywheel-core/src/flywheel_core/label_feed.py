"""Delayed ground truth for live traffic: each scored transaction's label, delivered when it comes due.

Chargebacks arrive days after the transaction (`sim`: fraud after about 2 simulated days, legitimate when the
7-day window closes). For the loop to learn from live traffic, those labels must reach

- the drift service (`POST /v1/labels`, the drift labels token), which joins them to the predictions it logged
  and reports performance per version;
- the offline data the trainer reads: each delivered transaction is appended, with its label, as a parquet part
  `transactions.live-<n>.parquet` beside the history's transactions.parquet (the trainer reads both).

What was scored is the features service's stream log (`<data>/stream/transactions.jsonl`, every transaction the
transformer scored, see services/features/_stream.py); the truth is the simulator's live file (the rows
`python -m flywheel_core.sim live` wrote, with `is_fraud` and `label_timestamp`). Time is the simulation's:
"now" is the newest scored event, so a label is due when its label_timestamp is at or before it. Real users
post their own labels to the same endpoint instead (services/drift/README.md).

Delivery is at least once: labels are posted first and the part written after, so a crash in between posts
them again on the next run, which the drift service counts as duplicates. A transaction in a part is never
posted again.

CLI:
    python -m flywheel_core.label_feed --data DIR --truth LIVE.jsonl [--truth ...] --drift-url URL \
        --token-file FILE [--ca-file FILE] [--interval SECONDS | --once]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import feature_pipeline
from .sim import TRANSACTION_COLUMNS

STREAM_LOG = Path("stream") / "transactions.jsonl"
"""The features service's stream log, relative to the data directory: what was scored."""
LIVE_PART_GLOB = feature_pipeline.LIVE_TRANSACTIONS_GLOB
_LIVE_PART = re.compile(r"^transactions\.live-(\d{6})\.parquet$")
POST_CHUNK = 1000
"""Labels per POST (the drift service takes bodies up to its MAX_BODY_BYTES)."""

log = logging.getLogger("flywheel_core.label_feed")


def read_truth(paths: Iterable[Path]) -> pd.DataFrame:
    """The simulator's live rows (JSON lines), one per transaction id, timestamps as UTC datetimes."""
    frames = [pd.read_json(path, lines=True, dtype={"transaction_id": str, "card_id": str, "merchant_id": str})
              for path in paths if Path(path).stat().st_size]
    if not frames:
        return pd.DataFrame(columns=list(TRANSACTION_COLUMNS))
    truth = pd.concat(frames, ignore_index=True).drop_duplicates("transaction_id")
    for column in ("event_timestamp", "label_timestamp"):
        truth[column] = pd.to_datetime(truth[column], utc=True, format="ISO8601")
    return truth[list(TRANSACTION_COLUMNS)].reset_index(drop=True)


def scored(data_dir: Path) -> dict[str, int]:
    """Transaction id -> event time (µs) of everything the stream step logged; empty before the first."""
    path = Path(data_dir) / STREAM_LOG
    if not path.is_file():
        return {}
    out: dict[str, int] = {}
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # a line being written now: the next run reads it
            entry = json.loads(raw)
            out[str(entry["transaction_id"])] = int(entry["event_us"])
    return out


def delivered(data_dir: Path) -> set[str]:
    """Ids of the transactions already in a live part."""
    ids: set[str] = set()
    for part in sorted(Path(data_dir).glob(LIVE_PART_GLOB)):
        ids.update(feature_pipeline.read_parquet(part, columns=["transaction_id"])["transaction_id"].astype(str))
    return ids


def due(truth: pd.DataFrame, scored_at: dict[str, int], done: set[str]) -> pd.DataFrame:
    """Truth rows that were scored, are not delivered yet, and whose label is known by the newest scored event,
    in label order. Pure."""
    if not scored_at or truth.empty:
        return truth.iloc[0:0]
    now_us = max(scored_at.values())
    ids = truth["transaction_id"].astype(str)
    label_us = feature_pipeline.to_us(truth["label_timestamp"])
    mask = ids.isin(scored_at.keys()).to_numpy() & ~ids.isin(done).to_numpy() & (label_us <= now_us)
    rows = truth[mask]
    return rows.iloc[np.argsort(feature_pipeline.to_us(rows["label_timestamp"]), kind="stable")]


def write_part(data_dir: Path, rows: pd.DataFrame) -> Path:
    """Append `rows` as the next live part (the trainer reads the parts with the history)."""
    data_dir = Path(data_dir)
    taken = [int(m.group(1)) for p in data_dir.glob(LIVE_PART_GLOB) if (m := _LIVE_PART.match(p.name))]
    path = data_dir / f"transactions.live-{max(taken, default=0) + 1:06d}.parquet"
    feature_pipeline.write_parquet(rows[list(TRANSACTION_COLUMNS)].reset_index(drop=True), path)
    return path


@dataclass(frozen=True)
class Drift:
    """Where labels go: the drift service's base URL and its labels token."""

    url: str
    token_file: Path
    ca_file: Path | None = None
    timeout_s: float = 10.0

    def post(self, rows: pd.DataFrame) -> dict[str, int]:
        """POST the rows' labels in chunks; totals of the answers. Raises OSError when the service does not take
        them."""
        token = Path(self.token_file).read_text().strip()
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        totals = {"accepted": 0, "duplicates": 0, "unmatched": 0, "conflicts": 0}
        labels = [
            {"id": str(i), "label": int(v)} for i, v in zip(rows["transaction_id"], rows["is_fraud"], strict=True)
        ]
        for start in range(0, len(labels), POST_CHUNK):
            request = urllib.request.Request(
                f"{self.url.rstrip('/')}/v1/labels", method="POST",
                data=json.dumps({"labels": labels[start:start + POST_CHUNK]}).encode(),
                headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
                    answer = json.loads(response.read())
            except urllib.error.HTTPError as e:
                raise OSError(f"the drift service refused labels: {e.code} {e.read()[:300]!r}") from e
            for key in ("accepted", "duplicates", "unmatched"):
                totals[key] += int(answer.get(key, 0))
            totals["conflicts"] += len(answer.get("conflicts", []))
        return totals


@dataclass(frozen=True)
class FeedResult:
    delivered: int
    answer: dict[str, int]
    part: Path | None


def feed_once(data_dir: Path, truth: pd.DataFrame, drift: Drift) -> FeedResult:
    """Deliver every label due now: post it, then append its transaction to the offline data."""
    rows = due(truth, scored(data_dir), delivered(data_dir))
    if rows.empty:
        return FeedResult(0, {}, None)
    answer = drift.post(rows)
    return FeedResult(len(rows), answer, write_part(data_dir, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flywheel_core.label_feed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the data directory (stream log, live parts)")
    parser.add_argument("--truth", type=Path, action="append", required=True, help="the simulator's live JSON lines")
    parser.add_argument("--drift-url", required=True, help="the drift service, e.g. http://127.0.0.1:8070")
    parser.add_argument("--token-file", type=Path, required=True, help="file holding the drift labels token")
    parser.add_argument("--ca-file", type=Path, default=None, help="CA bundle for an https drift URL")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between deliveries (default 5)")
    parser.add_argument("--once", action="store_true", help="deliver what is due now and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    drift = Drift(args.drift_url, args.token_file, args.ca_file)
    truth = read_truth(args.truth)
    while True:
        try:
            result = feed_once(args.data, truth, drift)
        except OSError as e:
            log.warning("labels not delivered, trying again in %.0f s: %s", args.interval, e)
            result = None
        if result and result.part is not None:  # a part is written exactly when labels were delivered
            log.info("delivered %d labels (%s) -> %s", result.delivered, result.answer, result.part.name)
        if args.once:
            return 0 if result is not None else 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
