"""`python -m flywheel_transformer`: read the settings once, then serve; exit 2 on a bad setting or version."""

from __future__ import annotations

import sys

from flywheel_contracts.tls import TLS, TLSConfigError
from flywheel_core.model_repo import ModelRepoError

from ._config import load_settings
from ._errors import ConfigError, ModelMetadataError
from ._server import serve


def main() -> int:
    try:
        settings = load_settings()
        tls = TLS.from_env()  # HTTPS and verified peers when FLYWHEEL_TLS_* are set (the chart's tls.enabled)
    except (ConfigError, TLSConfigError) as e:
        print(f"flywheel-transformer: {e}", file=sys.stderr)
        return 2
    try:
        serve(settings, tls)
    except (ModelRepoError, ModelMetadataError) as e:
        print(f"flywheel-transformer: cannot serve model '{settings.model_name}': {e}", file=sys.stderr)
        return 2
    return 0
