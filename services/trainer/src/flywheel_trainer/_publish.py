"""Assemble a version in a staging directory and hand it to `flywheel_core.model_repo.publish`.

The staging directory lives inside the model repository (same filesystem), so publishing is a rename:
readers see the whole version or nothing, and an earlier version is never touched.
"""

from __future__ import annotations

import logging
import platform
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flywheel_core import model_repo, schema

from ._card import render_model_card
from ._errors import PublishError

log = logging.getLogger(__name__)

DRIFT_REFERENCE_FILE = "drift_reference.parquet"
MODEL_CARD_FILE = "MODEL_CARD.md"
_PACKAGES = ("flywheel-trainer", "flywheel-core", "torch", "onnx", "onnxruntime", "onnxscript",
             "scikit-learn", "feast", "numpy", "pandas", "pyarrow")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_drift_reference(path: Path, x: np.ndarray, probability: np.ndarray) -> Path:
    """Model input columns by name (FP32) plus the model's probability, one row per sampled training row."""
    frame = pd.DataFrame(np.asarray(x, dtype=np.float32), columns=[c["name"] for c in schema.COLUMNS])
    frame[schema.OUTPUT_NAME] = np.asarray(probability, dtype=np.float32).reshape(-1)
    frame.to_parquet(path, index=False)
    return path


def base_metadata(feature_service: str, defaults: dict[str, float]) -> dict[str, Any]:
    """The contract fields that do not depend on training results (docs/architecture.md)."""
    return {
        "created_at": utc_now(),
        "feature_service": feature_service,
        "input": {
            "name": schema.INPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, schema.INPUT_DIM],
            "columns": [dict(column) for column in schema.COLUMNS],
        },
        "output": {"name": schema.OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 1]},
        "defaults": {name: float(defaults[name]) for name in schema.NUMERIC_FEATURES},
    }


def training_domain(rows: pd.DataFrame) -> dict[str, Any]:
    """What the model saw in training (metadata `training_domain`, the ModelMetadata contract): every value of
    each raw categorical of schema.DOMAIN_CATEGORICALS, sorted, and the min and max of each raw numeric of
    schema.DOMAIN_NUMERICS, over `rows` (the rows trained on). Serving flags a value outside them as unseen."""
    vocabularies = {
        name: sorted({str(value) for value in rows[name].dropna().unique()}) for name in schema.DOMAIN_CATEGORICALS
    }
    ranges = {}
    for name in schema.DOMAIN_NUMERICS:
        values = pd.to_numeric(rows[name], errors="coerce").astype("float64")
        values = values[np.isfinite(values)]
        if len(values):
            ranges[name] = {"min": float(values.min()), "max": float(values.max())}
    return {"rows": len(rows), "vocabularies": vocabularies, "ranges": ranges}


def run_pre_publish(command: str, staging: Path) -> None:
    """Run the configured pre-publish command on the staging directory; a failure stops the publish."""
    if not command.strip():
        return
    argv = [*shlex.split(command), str(staging)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise PublishError(
            f"pre-publish command {' '.join(argv)!r} exited {result.returncode}; nothing was published:\n"
            + "\n".join(tail)
        )
    log.info("pre-publish command done: %s", (result.stdout.strip().splitlines() or [""])[-1])


def publish_version(staging: Path, repo: Path, model: str, metadata: dict[str, Any]) -> Path:
    """Write the model card, drop unpublished variant files, and publish `staging` as the next version."""
    for variant in metadata["variants"].values():
        if not variant["published"]:
            (staging / variant["file"]).unlink(missing_ok=True)
    (staging / MODEL_CARD_FILE).write_text(render_model_card({**metadata, "model": model}))
    try:
        return model_repo.publish(staging, repo, model, metadata)
    except model_repo.ModelRepoError as e:
        raise PublishError(f"could not publish {model} into {repo}: {e}") from e


def discard(staging: Path) -> None:
    """Remove a staging directory left by a failed run; published versions are never touched."""
    shutil.rmtree(staging, ignore_errors=True)
