"""A version's weights as plain arrays, and a warm start (stateful retraining) from them.

ONNX is what serves, but fine-tuning needs the module's tensors and what builds the module around them. So
every version also publishes both candidates of its run as numpy `.npz` archives of their state dicts, read
back with `np.load(allow_pickle=False)` (data, never code: no pickle, no `torch.save`):

- `weights.torch.npz`: the `FraudNet` (numeric statistics, embeddings, MLP, calibration);
- `weights.baseline.npz`: the logistic regression as `LinearBaseline` (scaler, coefficients, intercept).

They are digested in `files` like every file; metadata `lineage.training.weights` says which module each one is,
the hyperparameters that rebuild it (`architecture`) and which one the version serves.

`FLYWHEEL_TRAINER_WARM_START=vN` loads that version (`model_repo.load_version`: digests, and the signature when
a key is configured), refuses it when its input columns or its torch model's architecture differ from this run's
(ConfigError, exit 2, naming the setting), and returns its `FraudNet` with every tensor as published -- its
numeric statistics included, so each feature is scaled as the parent learned it -- for `train_model` to
fine-tune. The baseline is not warm-started: it is refit on the run's data window (seconds of work, and its
one-hot vocabulary is the window's).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from flywheel_core import model_repo, schema

from ._baseline import LinearBaseline
from ._config import TrainerSettings
from ._errors import ConfigError, DataError
from ._model import FraudNet

log = logging.getLogger("flywheel_trainer")

WEIGHTS_FILES = {"torch": "weights.torch.npz", "baseline": "weights.baseline.npz"}
"""Candidate -> its weights file in a version."""
WEIGHTS_FORMAT = "numpy .npz of the module's state dict (np.load(path, allow_pickle=False)), one array per tensor"
SETTING = "FLYWHEEL_TRAINER_WARM_START"


def _inputs() -> dict[str, Any]:
    return {"numeric_features": list(schema.NUMERIC_FEATURES), "hashed_buckets": dict(schema.HASHED_COLUMNS)}


def torch_architecture(settings: TrainerSettings) -> dict[str, Any]:
    """What builds a `FraudNet` around its tensors (as JSON stores it)."""
    return _as_json({"module": "FraudNet", "embedding_dim": settings.embedding_dim, "hidden": settings.hidden,
                     "dropout": settings.dropout, **_inputs()})


def baseline_architecture() -> dict[str, Any]:
    """What builds a `LinearBaseline` around its tensors: one lookup table per hashed column, in this order."""
    return _as_json({"module": "LinearBaseline", **_inputs()})


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value))  # what a reader of metadata.json compares with


def save_weights(module: nn.Module, path: Path) -> Path:
    """Every tensor of `module`'s state dict as one array of an uncompressed .npz."""
    np.savez(path, **{name: tensor.detach().cpu().numpy() for name, tensor in module.state_dict().items()})
    return path


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a weights file; refuses anything that would need pickle to read."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a weights archive numpy can read without pickle: {e}") from e


def weights_lineage(settings: TrainerSettings, served: str) -> dict[str, Any]:
    """metadata `lineage.training.weights`: the files, how to read them, how to rebuild each module."""
    return {
        "format": WEIGHTS_FORMAT,
        "served": served,
        "torch": {"file": WEIGHTS_FILES["torch"], "architecture": torch_architecture(settings)},
        "baseline": {"file": WEIGHTS_FILES["baseline"], "architecture": baseline_architecture()},
    }


def rebuild(state: dict[str, np.ndarray], architecture: dict[str, Any]) -> nn.Module:
    """The module `architecture` names, holding exactly `state`'s tensors (in eval mode). DataError when the arrays
    do not fit it (names, shapes, dtypes)."""
    kind = architecture.get("module")
    try:
        if kind == "FraudNet":
            module: nn.Module = FraudNet(state["log_mask"], state["mean"], state["std"],
                                         int(architecture["embedding_dim"]), int(architecture["hidden"]),
                                         float(architecture["dropout"]))
        elif kind == "LinearBaseline":
            tables = [state[f"table_{j}"] for j in range(len(architecture["hashed_buckets"]))]
            module = LinearBaseline(state["log_mask"], state["mean"], state["scale"], state["numeric_coef"], tables,
                                    float(state["intercept"]))
        else:
            raise DataError(f"unknown module {kind!r} in the weights' architecture: expected FraudNet or "
                            "LinearBaseline")
    except KeyError as e:
        raise DataError(f"the weights lack the tensor {e} that a {kind} needs") from e
    expected = module.state_dict()
    problems = sorted(set(expected) ^ set(state))
    problems += [f"{name}: {tuple(state[name].shape)} {state[name].dtype} where a {kind} has "
                 f"{tuple(tensor.shape)} {tensor.dtype}" for name, tensor in expected.items()
                 if name in state and (tuple(state[name].shape) != tuple(tensor.shape)
                                       or torch.from_numpy(np.ascontiguousarray(state[name])).dtype != tensor.dtype)]
    if problems:
        raise DataError(f"the weights do not fit a {kind} built from their architecture: {'; '.join(problems[:5])}")
    module.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in state.items()}, strict=True)
    return module.eval()


@dataclass(frozen=True)
class WarmStart:
    """The parent a run fine-tunes: its version, its torch model as published and where that came from."""

    version: str
    model: FraudNet
    file: str
    sha256: str

    def lineage(self, validation_pr_auc_before: float | None) -> dict[str, Any]:
        """metadata `lineage.training.warm_start`."""
        return {"version": self.version, "file": self.file, "sha256": self.sha256,
                "validation_pr_auc_before": validation_pr_auc_before,
                "kept": "the parent's numeric statistics and every tensor as the starting point; Adam restarts, "
                        "Platt calibration is refit on this run's validation split"}


def load_warm_start(repo: Path, model: str, wanted: str, settings: TrainerSettings) -> WarmStart | None:
    """The verified torch model of version `wanted` of `model` ("" : cold start, None), ready to fine-tune.

    ConfigError (exit 2, naming WARM_START) when the version does not exist, carries no weights, or takes other input
    columns or another architecture than this run builds; DataError when it fails verification (a tampered file)."""
    if not wanted:
        return None
    where = f"Config '{SETTING}' has value '{wanted}'"
    try:
        path = model_repo.resolve(repo, model, wanted)
    except model_repo.VersionNotFound as e:
        raise ConfigError(f"{where}: {e}") from e
    try:
        version = model_repo.load_version(path)
    except model_repo.ModelRepoError as e:
        raise DataError(f"{where}, but that version cannot be trusted to start from: {e}") from e
    if version.spec.rejected:
        log.warning("%s: %s %s was published as rejected by its gates; fine-tuning it anyway, as asked",
                    SETTING, model, wanted)
    columns = [(c.name, c.kind, c.buckets) for c in version.spec.input.columns]
    if columns != [(c["name"], c["kind"], c.get("buckets")) for c in schema.COLUMNS]:
        raise ConfigError(f"{where}: its input columns differ from the ones this trainer builds "
                          f"({len(columns)} vs {len(schema.COLUMNS)} columns, or their names, kinds or buckets): "
                          "its weights mean other features; start cold (unset it) or name a version of this schema")
    described = version.metadata.get("lineage", {}).get("training", {}).get("weights")
    if not isinstance(described, dict) or not isinstance(described.get("torch"), dict):
        raise ConfigError(f"{where}: {model} {wanted} was published without weights (before versions carried "
                          f"{WEIGHTS_FILES['torch']}); start cold (unset it) or name a newer version")
    theirs, ours = described["torch"].get("architecture", {}), torch_architecture(settings)
    differ = [f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in sorted(set(theirs) | set(ours))
              if theirs.get(key) != ours.get(key)]
    if differ:
        raise ConfigError(f"{where}: its torch model has another architecture than this run would build "
                          f"({'; '.join(differ)}): set EMBEDDING_DIM, HIDDEN and DROPOUT as it was trained, or "
                          "start cold (unset it)")
    file = str(described["torch"].get("file", ""))
    digest = version.spec.files.get(file)
    if digest is None:
        raise DataError(f"{where}, but its weights file {file!r} is not among the digested `files` of its "
                        "metadata.json: it cannot be verified; republish the version")
    net = cast(FraudNet, rebuild(read_weights(version.file(file)), theirs))  # its architecture says FraudNet
    log.info("warm start: %s %s's torch model (%s, sha256 %s...) is the starting point", model, wanted, file,
             digest[:12])
    return WarmStart(version=version.version, model=net, file=file, sha256=digest)
