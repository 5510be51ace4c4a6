"""Flywheel trainer: point-in-time training set from Feast -> logistic-regression baseline and a
calibrated torch model -> ONNX fp32/fp16/int8 variants behind an accuracy gate, with measured latency
-> an immutable version in the model repository (`flywheel_core.model_repo.publish`).

Run it as `python -m flywheel_trainer train --feature-repo ... --data ... --model-repo ... --model fraud`.
`python -m flywheel_trainer skew --drift-url ... --token-file ...` checks served model inputs against the
point-in-time features training would join (training-serving skew, `_skew`).

Names that need torch, onnx or scikit-learn load on first use, so `--if-empty` on a repository that
already has a version exits in a second or two instead of importing torch for nothing.
"""

import os
from importlib import import_module
from typing import Any

# ONNX Runtime (1.31 here, on Linux too) keeps a telemetry device id and an event database under
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime unless this is set before it starts; a training job
# writes nothing outside its data and model directories. Set here, before any module imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ._config import TrainerSettings, load_settings
from ._errors import (
    CandidateRejected,
    ConfigError,
    DataError,
    DriftError,
    ExportError,
    PublishError,
    TrainerError,
)

_LAZY = {
    "GateThresholds": "._variants",
    "TrainingSet": "._dataset",
    "build_training_set": "._dataset",
    "gate": "._variants",
    "main": "._cli",
    "skew": "._skew",
    "train": "._cli",
    "train_and_publish": "._pipeline",
}

__all__ = [
    "CandidateRejected",
    "ConfigError",
    "DataError",
    "DriftError",
    "ExportError",
    "GateThresholds",
    "PublishError",
    "TrainerError",
    "TrainerSettings",
    "TrainingSet",
    "build_training_set",
    "gate",
    "load_settings",
    "main",
    "skew",
    "train",
    "train_and_publish",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
