"""Command line: `python -m flywheel_drift` serves; `python -m flywheel_drift precompute --version-dir DIR`
writes DIR/drift_state/ for a version being published (see `_state`).

Exit status: 0 ok, 2 bad configuration or arguments, 3 a reference or state problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from flywheel_contracts.tls import TLS, TLSConfigError

from ._config import load_settings
from ._errors import ConfigError, ReferenceUnavailable


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from flywheel_contracts.admission import admission

    from ._server import create_app
    from ._service import DriftService

    settings = load_settings()
    tls = TLS.from_env()  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set (the chart's tls.enabled)
    service = DriftService(settings)
    app = admission(create_app(service), settings, "drift", service.metrics.registry)
    # No access log: no log line per request (metrics count them).
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False,
                **tls.uvicorn_options())
    return 0


def _precompute(args: argparse.Namespace) -> int:
    from ._state import compute_state, write_state

    settings = load_settings()
    ert = args.ert if args.ert is not None else settings.online_ert
    started = time.perf_counter()
    state = compute_state(args.version_dir, ert=ert, k=settings.online_k, online_features=settings.online_features,
                          simulate=not args.no_simulate, streams=args.streams)
    path = write_state(args.version_dir, state)
    online = state["online"]
    print(f"wrote {path} in {time.perf_counter() - started:.1f}s: online h={online['h']:.4f} for ERT {online['ert']:g} "
          f"over {len(online['features'])} features ({online['method']})")
    _exit_now(0)
    return 0


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown. A short job that read parquet through pyarrow aborted at
    exit about one run in six here ("terminate called without an active exception", status -6) while C++
    thread pools were destroyed, after its work was written; the trainer, which runs this command before
    publishing, then refused the version. Everything is written and closed by now: flush and go."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flywheel_drift", description="Flywheel drift detection service")
    commands = p.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the HTTP service (the default)")
    serve.set_defaults(run=_serve)
    pre = commands.add_parser("precompute", help="write <version-dir>/drift_state/ before publishing a version")
    pre.add_argument("--version-dir", required=True, help="a staging or version directory with drift_reference.parquet")
    pre.add_argument("--ert", type=float, default=None, help="online ERT in rows (default FLYWHEEL_DRIFT_ONLINE_ERT)")
    pre.add_argument("--streams", type=int, default=2000,
                     help="simulated streams for the threshold check (default 2000)")
    pre.add_argument("--no-simulate", action="store_true", help="Siegmund's approximation only (instant)")
    pre.set_defaults(run=_precompute)
    p.set_defaults(run=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, TLSConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ReferenceUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
