"""Command line of the simulator (`python -m flywheel_core.sim ...`).

`history` writes the transactions and, through the feature pipeline, the feature tables, plus
`simulation.json` (size, seed, window). `live` reads that file from the data directory so its traffic
continues the same world right after the history, unless --size/--seed/--start say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from . import feature_pipeline, sim


def _history(args: argparse.Namespace) -> int:
    config = sim.preset(args.size, args.seed, args.start)
    transactions = sim.generate_history(config)
    out = Path(args.out)
    feature_pipeline.write_feature_tables(transactions, out)
    meta = {
        "size": args.size, "seed": config.seed, "start": config.start.isoformat(), "end": config.end.isoformat(),
        "transactions": len(transactions), "fraud_rate": round(float(transactions["is_fraud"].mean()), 5),
    }
    (out / sim.SIMULATION_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    # Last, so a run that was interrupted does not look complete to `make data`.
    feature_pipeline.write_parquet(transactions, out / feature_pipeline.TRANSACTIONS_FILE)
    print(f"wrote {len(transactions)} transactions ({meta['fraud_rate']:.2%} fraud) from {meta['start']} "
          f"to {meta['end']} and the feature tables to {out}")
    return 0


def _live(args: argparse.Namespace) -> int:
    recorded = {}
    meta_path = Path(args.data) / sim.SIMULATION_FILE
    if meta_path.is_file():
        recorded = json.loads(meta_path.read_text())
    size = args.size or recorded.get("size", "default")
    seed = args.seed if args.seed is not None else int(recorded.get("seed", 7))
    start_of_history = recorded.get("start") if args.size is None and args.seed is None else None
    config = sim.preset(size, seed, start_of_history)
    # Right after the history on disk, whatever length this version's preset has: a history made by an older
    # preset (a shorter window) ends earlier than `config.end`, and traffic from there would be in its future.
    start = args.start or (recorded.get("end") if start_of_history is not None else None)
    live = sim.generate_live(config, args.scenario, args.n, start, args.traffic_seed)
    lines = "".join(json.dumps(record) + "\n" for record in _records(live))
    if args.out in (None, "-"):
        sys.stdout.write(lines)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
    return 0


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: timestamps as ISO-8601 UTC with a trailing Z."""
    frame = frame.copy()
    for column in ("event_timestamp", "label_timestamp"):
        frame[column] = frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return frame.to_dict(orient="records")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flywheel_core.sim", description=sim.__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    history = commands.add_parser("history", help="write the history and the feature tables into a directory")
    history.add_argument("--out", required=True, help="directory for transactions.parquet and the feature tables")
    history.add_argument("--size", choices=sorted(sim.PRESETS), default="default")
    history.add_argument("--seed", type=int, default=7, help="population and history seed")
    history.add_argument("--start", default=None,
                         help="first day of the history (ISO date, UTC); default: so that it ends today 00:00 UTC")
    history.set_defaults(run=_history)

    live = commands.add_parser("live", help="write live transactions after the history as JSON lines")
    live.add_argument("--scenario", choices=list(sim.SCENARIOS), default="none")
    live.add_argument("--n", type=int, default=1000, help="number of transactions")
    live.add_argument("--out", default=None, help="JSON lines file (default: stdout)")
    live.add_argument("--data", default=os.environ.get("FLYWHEEL_DATA_DIR", "data"),
                      help="history directory whose simulation.json gives size, seed and window "
                           "(default: $FLYWHEEL_DATA_DIR or ./data)")
    live.add_argument("--size", choices=sorted(sim.PRESETS), default=None, help="override the recorded size")
    live.add_argument("--seed", type=int, default=None, help="override the recorded population seed")
    live.add_argument("--start", default=None,
                      help="first instant of the traffic (ISO, UTC); default: end of the history")
    live.add_argument("--traffic-seed", type=int, default=0, help="varies the traffic, not the world")
    live.set_defaults(run=_live)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
