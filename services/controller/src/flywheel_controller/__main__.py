"""`python -m flywheel_controller`: reconcile the namespace's ModelRollouts until SIGTERM (settings from
FLYWHEEL_CONTROLLER_*). `python -m flywheel_controller --local rollout.yaml [...]`: the same engine against the
local router, rollouts (and RetrainPolicies, with --trainer-command) read from YAML files; exits 0 when every rollout
Succeeded, 1 otherwise (with a policy: runs until SIGTERM). `python -m flywheel_controller retrain NAME`: ask a local
policy for a run. Exit 2 for a bad setting or file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from flywheel_contracts.tls import TLS, TLSConfigError

from ._config import ConfigError, load_settings
from ._ports import StoreError


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flywheel_controller", description=__doc__)
    parser.add_argument("--local", nargs="+", type=Path, metavar="ROLLOUT_YAML",
                        help="run without a cluster: ModelRollouts from these files, against the local router")
    parser.add_argument("--state-dir", type=Path, default=Path("data/rollouts"),
                        help="local mode: where each rollout's status is kept (resumes after a restart)")
    parser.add_argument("--model-repo", type=Path,
                        help="local mode: the model repository; a candidate published there as rejected by its gates "
                        "(or not published there) is refused before any traffic (default: MODEL_REPO; unset: no check)")
    parser.add_argument("--keep-running", action="store_true", help="local mode: do not exit when every rollout ended")
    parser.add_argument("--trainer-command", metavar="COMMAND",
                        help="local mode with a RetrainPolicy in the files: the command that trains (shell words), run "
                        "with the run's FLYWHEEL_TRAINER_* settings in its environment")
    return parser.parse_args(argv)


def _retrain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flywheel_controller retrain",
                                     description="local mode's kubectl flywheel retrain: ask a policy for a run")
    parser.add_argument("name", help="the RetrainPolicy")
    parser.add_argument("--state-dir", type=Path, default=Path("data/rollouts"), help="the local controller's")
    args = parser.parse_args(argv)
    from ._retrain_local import request_retrain

    print(f"asked {args.name} to retrain ({request_retrain(args.state_dir, args.name)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["retrain"]:
        return _retrain(argv[1:])
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("flywheel.controller")
    try:
        settings = load_settings()
        tls = TLS.from_env()  # HTTPS and verified peers when FLYWHEEL_TLS_* are set (the chart's tls.enabled)
    except (ConfigError, TLSConfigError) as e:
        log.error("refusing to start: %s", e)
        return 2
    from ._main import run_local, serve

    try:
        if args.local:
            if args.model_repo is not None:
                settings = settings.model_copy(update={"model_repo": args.model_repo})
            return asyncio.run(run_local(settings, args.local, args.state_dir, args.keep_running, tls,
                                         trainer_command=args.trainer_command))
        asyncio.run(serve(settings, tls))
    except (ConfigError, StoreError) as e:
        log.error("refusing to start: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
