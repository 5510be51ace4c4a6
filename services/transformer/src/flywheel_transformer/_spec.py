"""What the transformer needs from a published model version's `metadata.json`, checked once at load.

It reads the typed contract (flywheel_core.model_repo.ModelMetadata, validated by `load_version`), never the
raw file: a field missing or of the wrong type is refused there, naming the field.

The column order and hashing live in flywheel_core.schema, shared with the trainer; the metadata
records the columns the model was trained on. If they differ, this transformer would feed the model
vectors it was not trained on, so the version is refused instead of served. The training defaults
(medians) stand in for online features that are missing when a request is scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel_core.model_repo import Column, ModelMetadata
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


def _platform(metadata: ModelMetadata) -> str:
    files = [v.file for v in metadata.published_variants().values()]
    found = {PLATFORMS.get("." + f.rsplit(".", 1)[-1]) for f in files if "." in f}
    only = found.pop() if len(found) == 1 else None
    return only or ""


ColumnKey = tuple[str, str, int | None]


def _column_key(column: Column) -> ColumnKey:
    return (column.name, column.kind, column.buckets if column.kind == "hashed" else None)


EXPECTED_COLUMNS: tuple[ColumnKey, ...] = tuple(_column_key(Column.model_validate(c)) for c in COLUMNS)
"""This transformer's flywheel_core.schema columns, in the form a version's columns are compared in."""


def spec_from_metadata(metadata: ModelMetadata, where: str = "metadata.json") -> ModelSpec:
    """Check a version's typed metadata (`model_repo.ModelVersion.spec`, already validated against the contract
    by load_version) against this transformer's schema; raises ModelMetadataError. Called once per version
    loaded, never per request."""
    model, version, source = metadata.model, metadata.version, metadata.input
    expected = list(EXPECTED_COLUMNS)
    actual = [_column_key(c) for c in source.columns]
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
    if source.datatype != "FP32" or source.shape[-1:] != [INPUT_DIM]:
        raise ModelMetadataError(f"{where}: input must be FP32 [-1, {INPUT_DIM}], got {source.datatype} {source.shape}")
    service = metadata.feature_service or FEATURE_SERVICE  # None: recorded before the field existed
    if service != FEATURE_SERVICE:
        raise ModelMetadataError(
            f"{where}: model was trained on feature service '{service}', this transformer serves "
            f"'{FEATURE_SERVICE}': deploy the matching transformer"
        )
    # Defaults are finite numbers by the contract (model_repo.FiniteNumber): load_version refused any other.
    domain = metadata.training_domain
    return ModelSpec(
        model=model,
        version=version,
        input_name=source.name,
        output_name=metadata.output.name,
        defaults=dict(metadata.defaults),
        column_names=tuple(c.name for c in source.columns),
        feature_service=service,
        predictor_platform=_platform(metadata),
        seen=SeenValues.of(domain) if domain is not None else None,
    )
