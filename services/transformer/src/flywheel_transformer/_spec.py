"""What the transformer needs from a published model version's `metadata.json`, checked once at load.

The column order and hashing live in flywheel_core.schema, shared with the trainer; the metadata
records the columns the model was trained on. If they differ, this transformer would feed the model
vectors it was not trained on, so the version is refused instead of served. The training defaults
(medians) stand in for online features that are missing when a request is scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flywheel_core.model_repo import TrainingDomain
from flywheel_core.schema import COLUMNS, FEATURE_SERVICE, INPUT_DIM, INPUT_NAME, OUTPUT_NAME

from ._errors import ModelMetadataError
from ._policy import SeenValues


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model version's metadata used to build requests to the predictor."""

    model: str
    version: str
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    defaults: Mapping[str, float] = field(default_factory=dict)
    column_names: tuple[str, ...] = tuple(c["name"] for c in COLUMNS)
    feature_service: str = FEATURE_SERVICE
    predictor_platform: str = ""
    """The V2 platform that serves this version's model files ("onnxruntime_onnx" for ONNX), "" if unknown."""
    seen: SeenValues | None = None
    """What the model saw in training (metadata `training_domain`); None for a version published before the
    trainer recorded it: no unseen checks for it."""


PLATFORMS = {".onnx": "onnxruntime_onnx"}
"""V2 platform names by model file suffix, as the predictor reports them for the same files."""


def _platform(metadata: Mapping[str, Any]) -> str:
    variants = metadata.get("variants")
    files = [
        str(v.get("file", ""))
        for v in (variants.values() if isinstance(variants, Mapping) else [])
        if isinstance(v, Mapping) and v.get("published", True)
    ]
    found = {PLATFORMS.get("." + f.rsplit(".", 1)[-1]) for f in files if "." in f}
    only = found.pop() if len(found) == 1 else None
    return only or ""


def _column_key(column: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = column.get("kind")
    return (column.get("name"), kind, column.get("buckets") if kind == "hashed" else None)


def spec_from_metadata(metadata: Mapping[str, Any], where: str = "metadata.json") -> ModelSpec:
    """Check a version's metadata against this transformer's schema; raises ModelMetadataError."""
    try:
        model = str(metadata["model"])
        version = str(metadata["version"])
        spec_in = metadata["input"]
        columns = spec_in["columns"]
    except (KeyError, TypeError) as e:
        raise ModelMetadataError(f"{where} lacks {e}: republish the version with the trainer") from e
    if not isinstance(columns, list) or not all(isinstance(c, Mapping) for c in columns):
        raise ModelMetadataError(f"{where}: input.columns must be a list of objects")
    expected = [_column_key(c) for c in COLUMNS]
    actual = [_column_key(c) for c in columns]
    if actual != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
            min(len(actual), len(expected)),
        )
        raise ModelMetadataError(
            f"{where}: model {model} {version} was trained on {len(actual)} input columns that differ from "
            f"this transformer's flywheel_core.schema ({len(expected)} columns) from column {first} on "
            f"(model: {actual[first] if first < len(actual) else 'none'}, here: "
            f"{expected[first] if first < len(expected) else 'none'}): deploy a transformer built with the "
            "same flywheel-core as the trainer"
        )
    datatype = spec_in.get("datatype", "FP32")
    shape = spec_in.get("shape", [-1, INPUT_DIM])
    if datatype != "FP32" or not isinstance(shape, list) or shape[-1:] != [INPUT_DIM]:
        raise ModelMetadataError(f"{where}: input must be FP32 [-1, {INPUT_DIM}], got {datatype} {shape}")
    service = metadata.get("feature_service", FEATURE_SERVICE)
    if service != FEATURE_SERVICE:
        raise ModelMetadataError(
            f"{where}: model was trained on feature service '{service}', this transformer serves "
            f"'{FEATURE_SERVICE}': deploy the matching transformer"
        )
    defaults: dict[str, float] = {}
    for name, value in (metadata.get("defaults") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelMetadataError(f"{where}: defaults.{name} must be a finite number, got {value!r}")
        defaults[str(name)] = float(value)
    seen = None
    if metadata.get("training_domain") is not None:
        try:
            seen = SeenValues.of(TrainingDomain.model_validate(metadata["training_domain"]))
        except ValidationError as e:
            raise ModelMetadataError(f"{where}: training_domain does not fit the contract ({e.errors()[0]['msg']} at "
                                     f"{'.'.join(str(p) for p in e.errors()[0]['loc'])}): republish the version") from e
    output = metadata.get("output") or {}
    return ModelSpec(
        model=model,
        version=version,
        input_name=str(spec_in.get("name", INPUT_NAME)),
        output_name=str(output.get("name", OUTPUT_NAME)),
        defaults=defaults,
        column_names=tuple(str(c["name"]) for c in columns),
        feature_service=str(service),
        predictor_platform=_platform(metadata),
        seen=seen,
    )
