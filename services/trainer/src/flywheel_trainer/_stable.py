"""The stable version a candidate must beat: found in the model repository, verified, and scored on the
candidate's newest labelled window.

`FLYWHEEL_TRAINER_STABLE_VERSION` names it (`v3`), or `latest`: the newest version not published as rejected
(`model_repo.latest_accepted`). The version is loaded with `model_repo.load_version` (digests, and the
signature when a key is configured) before its served fp32 ONNX graph scores anything, and the rows are
vectorised with the stable's own `defaults` for missing values, as serving would do for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_core import model_repo, schema

from ._errors import ConfigError, DataError
from ._variants import run_onnx

log = logging.getLogger("flywheel_trainer")


@dataclass(frozen=True)
class StableScores:
    version: str
    probabilities: np.ndarray


def find_stable(repo: Path, model: str, wanted: str) -> model_repo.ModelVersion | None:
    """The verified stable version named by `wanted` ("" none, "latest", "vN"); None when no comparison is asked
    for, or `latest` finds no accepted version yet (the first version has nothing to beat)."""
    if not wanted:
        return None
    if wanted == "latest":
        version = model_repo.latest_accepted(repo, model)
        if version is None:
            log.info(
                "FLYWHEEL_TRAINER_STABLE_VERSION=latest: %s has no accepted version under %s yet; no stable to "
                "compare with",
                model,
                repo,
            )
            return None
    else:
        version = wanted
    try:
        path = model_repo.resolve(repo, model, version)
    except model_repo.VersionNotFound as e:
        raise ConfigError(f"Config 'FLYWHEEL_TRAINER_STABLE_VERSION' has value '{wanted}': {e}") from e
    try:
        return model_repo.load_version(path)
    except model_repo.ModelRepoError as e:
        raise DataError(f"the stable version {model} {version} cannot be compared with: {e}") from e


def score_stable(stable: model_repo.ModelVersion, rows: pd.DataFrame) -> StableScores:
    """The stable's served fp32 probabilities on `rows` (raw features, as the training set holds them)."""
    spec = stable.spec
    columns = [c.name for c in spec.input.columns]
    if columns != [c["name"] for c in schema.COLUMNS]:
        raise DataError(
            f"the stable version {spec.model} {spec.version} takes other input columns than this trainer builds "
            f"({len(columns)} vs {len(schema.COLUMNS)}): it cannot score the same rows; name a newer stable version"
        )
    fp32 = spec.variants.get("fp32")
    if fp32 is None or not fp32.published:
        raise DataError(f"the stable version {spec.model} {spec.version} has no published fp32 variant to score with")
    x = schema.vectorize_frame(rows, spec.defaults)
    try:
        probabilities = run_onnx(stable.file(fp32.file), x)
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise DataError(f"the stable version's {fp32.file} could not score the test rows: {e}") from e
    return StableScores(spec.version, np.asarray(probabilities, dtype=np.float64))
