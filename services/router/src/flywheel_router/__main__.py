"""`python -m flywheel_router`: read settings, serve until SIGTERM. Exit 2 for a bad setting."""

from __future__ import annotations

import logging
import sys

from ._config import load_settings
from ._errors import ConfigError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("flywheel_router")
    try:
        settings = load_settings()
    except ConfigError as e:
        log.error("refusing to start: %s", e)
        return 2
    import uvloop

    from ._main import serve

    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
