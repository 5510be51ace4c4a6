"""Flywheel predictor: kserve.ModelServer + ONNX Runtime serving published versions of one model (V1 + V2).

Run it with `python -m flywheel_predictor`; settings are FLYWHEEL_PREDICTOR_* variables (`Settings`).
Names that need kserve or ONNX Runtime load on first use, so importing the package (and reading the
settings) stays cheap and `__main__` can prepare the metrics directory before prometheus_client loads.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# ONNX Runtime keeps a telemetry device id and an event database under ~/.cache/Microsoft/DeveloperTools
# unless this is set before it starts; a server writes nothing outside its own directories.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ._config import Settings, load_settings
from ._errors import (
    ConfigError,
    InferenceFailed,
    InvalidRequest,
    MethodNotAllowed,
    ModelLoadError,
    ModelNotServed,
    PayloadTooLarge,
    PredictorError,
    UnsupportedMediaType,
    VersionNotServed,
    VersionUnavailable,
)
from ._selection import ProviderChoice, VariantChoice, choose_providers, choose_variant
from ._validation import TensorSpec, parse_v1, parse_v2

_LAZY = {
    "FastPath": "._fastpath",
    "FlywheelModelServer": "._server",
    "OnnxModel": "._model",
    "VersionSet": "._versions",
    "serve": "._server",
}

__all__ = [
    "ConfigError",
    "FastPath",
    "FlywheelModelServer",
    "InferenceFailed",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelLoadError",
    "ModelNotServed",
    "OnnxModel",
    "PayloadTooLarge",
    "PredictorError",
    "ProviderChoice",
    "Settings",
    "TensorSpec",
    "UnsupportedMediaType",
    "VariantChoice",
    "VersionNotServed",
    "VersionSet",
    "VersionUnavailable",
    "choose_providers",
    "choose_variant",
    "load_settings",
    "parse_v1",
    "parse_v2",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
