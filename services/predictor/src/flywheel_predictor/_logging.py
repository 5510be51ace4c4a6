"""The predictor's log format, set up in the parent and again in every worker process.

kserve spawns workers (multiprocessing *spawn*), which start from a fresh interpreter and never run
`__main__.main`; without this a worker's load and unload lines would go nowhere.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "flywheel_predictor"


def configure_logging() -> None:
    """One line per event on stderr with time, pid and level; idempotent."""
    log = logging.getLogger(LOGGER)
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
