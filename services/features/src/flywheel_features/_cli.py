"""`python -m flywheel_features [serve|apply|materialize|historical]`.

    serve (default)  Feast's feature server with /ready, /health, /metrics (settings: FLYWHEEL_FEATURES_*)
    apply            register feature_repo/ in the registry and create the online tables (`feast apply`)
    materialize      load the online store up to the end of the history (or --end), incrementally
    historical       point-in-time features of an entity parquet for a feature service, into a parquet
"""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from flywheel_contracts.tls import TLS, TLSConfigError
from flywheel_core.feature_pipeline import read_parquet

from . import _store
from ._config import Settings, load_settings
from ._errors import FeaturesError


def _serve(settings: Settings, _: argparse.Namespace) -> int:
    from ._server import serve

    try:
        tls = TLS.from_env()  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set (the chart's tls.enabled)
    except TLSConfigError as e:
        print(f"flywheel_features: {e}", file=sys.stderr)
        return 2
    serve(settings, tls)
    return 0


def _apply(settings: Settings, _: argparse.Namespace) -> int:
    changed = _store.apply(settings)
    where = f"{settings.repo_path} ({settings.store_yaml}), data in {settings.data_dir.resolve()}"
    print(f"feast apply: {where}: {', '.join(changed) if changed else 'unchanged, nothing written'}")
    return 0


def _materialize(settings: Settings, args: argparse.Namespace) -> int:
    store = _store.open_store(settings)
    end = None
    if args.end == "now":
        end = datetime.now(UTC)
    elif args.end:
        end = pd.Timestamp(args.end).to_pydatetime()
    intervals = _store.materialize(store, end)
    for name, (start, stop) in sorted(intervals.items()):
        print(f"materialized {name} from {start.isoformat()} to {stop.isoformat()}")
    if not intervals:
        print("online store already up to date")
    return 0


def _historical(settings: Settings, args: argparse.Namespace) -> int:
    store = _store.open_store(settings)
    entities = read_parquet(args.entities)
    frame = _store.historical(store, entities, args.feature_service or settings.feature_service)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    print(f"wrote {len(frame)} rows x {frame.shape[1]} columns to {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flywheel_features", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1],
    )
    commands = p.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the feature server").set_defaults(run=_serve)
    commands.add_parser("apply", help="feast apply").set_defaults(run=_apply)
    materialize = commands.add_parser("materialize", help="materialize incrementally into the online store")
    materialize.add_argument("--end", default=None,
                             help="ISO instant or 'now' (default: just after the newest row of the batch sources)")
    materialize.set_defaults(run=_materialize)
    historical = commands.add_parser("historical", help="point-in-time features for an entity parquet")
    historical.add_argument(
        "--entities", type=Path, required=True,
        help=f"parquet with columns {', '.join(_store.ENTITY_COLUMNS)} (event_timestamp = the as-of instant)",
    )
    historical.add_argument("--out", type=Path, required=True, help="output parquet: the entity columns + features")
    historical.add_argument("--feature-service", default=None,
                            help="default: FLYWHEEL_FEATURES_FEATURE_SERVICE (fraud_v1)")
    historical.set_defaults(run=_historical)
    p.set_defaults(run=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Known, harmless noise from Feast and ibis on every run; it would bury the commands' own output.
    warnings.filterwarnings("ignore", "On demand feature view is an experimental feature", RuntimeWarning)
    warnings.filterwarnings("ignore", r"fetch_arrow_table\(\) is deprecated", DeprecationWarning)
    try:
        settings = load_settings()
        return args.run(settings, args)
    except FeaturesError as e:
        print(f"flywheel_features: {e}", file=sys.stderr)
        return 2 if type(e).__name__ == "ConfigError" else 1
