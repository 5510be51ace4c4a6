"""Command line: `python -m flywheel_trainer [train] [--feature-repo ...] [--data ...] [--model-repo ...]
[--model fraud]`, and `python -m flywheel_trainer skew [--drift-url ...] [--token-file ...] [--version vN]` (the
run-time training-serving skew check, `_skew`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from flywheel_contracts.rollout import parse_duration
from flywheel_core import model_repo

from ._config import TrainerSettings, load_settings
from ._dataset import build_training_set
from ._errors import CandidateRejected, ConfigError, TrainerError, exit_code
from ._skew import skew

log = logging.getLogger("flywheel_trainer")


def train(settings: TrainerSettings, *, cutoff: pd.Timestamp | None = None) -> Path | None:
    """Train and publish the next version of `settings.model`; with `if_empty`, do nothing if one exists.
    CandidateRejected (exit 6) when the version failed its gates: it is published, marked rejected."""
    versions = model_repo.list_versions(settings.model_repo, settings.model)
    if settings.if_empty and versions:
        log.info(
            "%s already has %s under %s; --if-empty: nothing to do", settings.model, versions[-1], settings.model_repo
        )
        return None
    from ._pipeline import train_and_publish  # torch, onnx, scikit-learn: only once there is work to do

    started = time.perf_counter()
    training_set = build_training_set(
        settings.feature_repo, settings.data_dir, cutoff, yaml=settings.feature_store_yaml,
        data_window=pd.Timedelta(seconds=parse_duration(settings.window)) if settings.window else None,
    )
    target = train_and_publish(
        training_set, settings.model_repo, settings.model, settings, feature_repo=str(settings.feature_repo)
    )
    log.info("done: %s in %.1fs wall", target, time.perf_counter() - started)
    gates = model_repo.load_version(target, verify=False).spec.gates
    if gates is not None and gates.status == "rejected":
        raise CandidateRejected(
            f"{target} was published as rejected (compared with {gates.stable_version}): {gates.summary()}; it must "
            "not be rolled out (its MODEL_CARD.md and metadata.json `gates` say why)",
            path=target,
        )
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flywheel_trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("train", help="train, evaluate, export and publish the next model version (the default)")
    # Every option defaults to its FLYWHEEL_TRAINER_* setting.
    run.add_argument("--feature-repo", dest="feature_repo", type=Path, help="Feast repository (FEATURE_REPO)")
    run.add_argument("--data", dest="data_dir", type=Path, help="directory holding transactions.parquet (DATA_DIR)")
    run.add_argument("--model-repo", dest="model_repo", type=Path, help="model repository root (MODEL_REPO)")
    run.add_argument("--model", help="model name, e.g. fraud (MODEL)")
    run.add_argument(
        "--if-empty",
        dest="if_empty",
        action="store_true",
        default=None,
        help="exit 0 without training if the model already has a version (IF_EMPTY)",
    )
    run.add_argument("--epochs", type=int, help="most epochs (EPOCHS)")
    run.add_argument("--cutoff", help="training cut-off, ISO 8601 (default: the last event time)")
    check = commands.add_parser(
        "skew", help="compare the drift service's sample of served model inputs with the point-in-time offline "
        "features training would join, and post the counts back to it"
    )
    check.add_argument("--feature-repo", dest="feature_repo", type=Path, help="Feast repository (FEATURE_REPO)")
    check.add_argument("--data", dest="data_dir", type=Path, help="directory holding transactions.parquet (DATA_DIR)")
    check.add_argument("--model-repo", dest="model_repo", type=Path, help="model repository root (MODEL_REPO)")
    check.add_argument("--model", help="model name, e.g. fraud (MODEL)")
    check.add_argument("--version", dest="skew_version", help="one version, vN (SKEW_VERSION; default: every version "
                       "the drift service reports on)")
    check.add_argument("--drift-url", dest="drift_url", help="drift service base URL (DRIFT_URL)")
    check.add_argument("--token-file", dest="skew_token_file", type=Path, help="the drift skew token (SKEW_TOKEN_FILE)")
    check.add_argument("--ca-file", dest="drift_ca_file", type=Path, help="CA bundle for https (DRIFT_CA_FILE)")
    check.add_argument("--limit", dest="skew_limit", type=int, help="most served rows per version (SKEW_LIMIT)")
    return parser


_TRAIN_OPTIONS = ("feature_repo", "data_dir", "model_repo", "model", "if_empty", "epochs")
_SKEW_OPTIONS = ("feature_repo", "data_dir", "model_repo", "model", "skew_version", "drift_url", "skew_token_file",
                 "drift_ca_file", "skew_limit")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv or ["train"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("feast").setLevel(logging.WARNING)  # it logs every registry refresh at INFO
    try:
        fields = _SKEW_OPTIONS if args.command == "skew" else _TRAIN_OPTIONS
        settings = load_settings(**{f: getattr(args, f) for f in fields if getattr(args, f) is not None})
        if args.command == "skew":
            for paragraph in skew(settings):  # each as its version is posted
                print(paragraph, flush=True)
            return 0
        try:
            cutoff = pd.Timestamp(args.cutoff) if args.cutoff else None
        except ValueError as e:
            raise ConfigError(f"--cutoff has value '{args.cutoff}': expected an ISO 8601 timestamp") from e
        train(settings, cutoff=cutoff)
    except TrainerError as e:
        log.error("%s", e)
        return exit_code(e)
    return 0
