"""Flywheel's KServe transformer: raw card transactions -> online + on-demand features -> predictor (V2)
-> score and decision, with each inference logged as KServe-format CloudEvents off the request path.

Run it with `python -m flywheel_transformer`; settings are `FLYWHEEL_TRANSFORMER_*` (see `Settings`).
"""

from ._config import Settings, load_settings
from ._errors import ConfigError, ModelMetadataError, RequestError, TransformerError
from ._headers import (
    DEBUG_FEATURES_HEADER,
    DECISIONS_HEADER,
    INFERENCE_ID_HEADER,
    MODEL_VERSION_HEADER,
    SCORES_HEADER,
)
from ._main import main
from ._model import FraudTransformer
from ._server import serve

__all__ = [
    "ConfigError",
    "DEBUG_FEATURES_HEADER",
    "DECISIONS_HEADER",
    "FraudTransformer",
    "INFERENCE_ID_HEADER",
    "MODEL_VERSION_HEADER",
    "ModelMetadataError",
    "RequestError",
    "SCORES_HEADER",
    "Settings",
    "TransformerError",
    "load_settings",
    "main",
    "serve",
]
