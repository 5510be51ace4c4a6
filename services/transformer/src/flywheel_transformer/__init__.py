"""Flywheel's KServe transformer: raw card transactions -> online + on-demand features -> predictor (V2)
-> score and decision, with each inference logged as KServe-format CloudEvents off the request path.

Run it with `python -m flywheel_transformer`; settings are `FLYWHEEL_TRANSFORMER_*` (see `Settings`).
"""

from ._config import Settings, load_settings
from ._errors import ConfigError, ModelMetadataError, RequestError, TransformerError
from ._main import main
from ._model import DEBUG_FEATURES_HEADER, INFERENCE_ID_HEADER, FraudTransformer
from ._server import serve

__all__ = [
    "ConfigError",
    "DEBUG_FEATURES_HEADER",
    "FraudTransformer",
    "INFERENCE_ID_HEADER",
    "ModelMetadataError",
    "RequestError",
    "Settings",
    "TransformerError",
    "load_settings",
    "main",
    "serve",
]
