"""`python -m flywheel_transformer`: read the settings once, then serve; exit 2 on a bad setting or version."""

from __future__ import annotations

import sys

from flywheel_core.model_repo import ModelRepoError

from ._config import load_settings
from ._errors import ConfigError, ModelMetadataError
from ._server import serve


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"flywheel-transformer: {e}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except (ModelRepoError, ModelMetadataError) as e:
        print(f"flywheel-transformer: cannot serve model '{settings.model_name}': {e}", file=sys.stderr)
        return 2
    return 0
