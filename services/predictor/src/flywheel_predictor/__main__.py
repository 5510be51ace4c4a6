"""`python -m flywheel_predictor`: read settings, load and verify the model, serve until signalled.

Exit status 2 for a bad setting and 1 for a model that cannot be served (missing, tampered, or not
matching its metadata), each with one line saying why.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile

from flywheel_contracts.tls import TLS, TLSConfigError

from ._config import load_settings
from ._errors import ConfigError, PredictorError
from ._logging import LOGGER, configure_logging

log = logging.getLogger(LOGGER)


def _share_metrics_across_workers() -> None:
    """Several workers write metrics to one directory that /metrics sums up.

    prometheus_client picks its storage when it is first imported, so this runs before kserve (which
    imports it) is; spawned workers inherit the variable.
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="flywheel-predictor-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def main() -> int:
    configure_logging()
    try:
        settings = load_settings()
        tls = TLS.from_env()  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set (the chart's tls.enabled)
    except (ConfigError, TLSConfigError) as e:
        log.error("refusing to start: %s", e)
        return 2
    if settings.workers > 1:
        _share_metrics_across_workers()
    from ._server import serve

    try:
        serve(settings, tls)
    except PredictorError as e:
        log.error("refusing to start: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
