"""`python -m flywheel_router`: read settings, serve until SIGTERM. Exit 2 for a bad setting."""

from __future__ import annotations

import logging
import sys

from flywheel_contracts.tls import TLS, TLSConfigError

from ._config import load_settings
from ._errors import ConfigError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("flywheel_router")
    try:
        settings = load_settings()
        tls = TLS.from_env()  # HTTPS when FLYWHEEL_TLS_CERT_FILE/KEY_FILE are set (the chart's tls.enabled)
    except (ConfigError, TLSConfigError) as e:
        log.error("refusing to start: %s", e)
        return 2
    import uvloop

    from ._main import serve

    uvloop.run(serve(settings, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
