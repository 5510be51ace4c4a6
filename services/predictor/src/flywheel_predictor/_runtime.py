"""The ONNX Runtime adapter: open a verified model version and run its chosen variant.

`open_model` is the only place that reads the model repository and creates a session: it resolves the
version, verifies every sha256 (refusing a tampered file), picks provider and variant through
`_selection`, checks the session against metadata.json and scores one row, so a model that cannot
serve fails at start-up instead of on the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from flywheel_core import model_repo

from ._errors import ModelLoadError
from ._selection import GPU_PROVIDERS, ProviderChoice, VariantChoice, choose_providers, choose_variant
from ._validation import TensorSpec

log = logging.getLogger("flywheel_predictor")

_FLOAT32 = np.dtype(np.float32)
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclass(frozen=True)
class Choice:
    """What was chosen at start-up and why; workers spawned later reuse it rather than deciding again."""

    version_path: Path
    providers: ProviderChoice
    variant: VariantChoice


def tensor_spec(metadata: model_repo.ModelMetadata) -> TensorSpec:
    """The input/output this predictor serves from a version's typed metadata: one FP32 input [-1, D] and one
    output. Called once per load; requests read the returned TensorSpec, never the metadata."""
    source, target = metadata.input, metadata.output
    shape = source.shape
    if source.datatype != "FP32" or len(shape) != 2 or shape[0] != -1 or shape[1] < 1:
        raise ModelLoadError(
            f"metadata.json of {metadata.model} {metadata.version}: input is {source.datatype} {shape}; "
            "this predictor serves FP32 [-1, D] models"
        )
    spec = TensorSpec(source.name, shape[1], target.name, source.datatype)
    # No columns listed (the contract's default) leaves the width to the shape alone.
    if source.columns and len(source.columns) != spec.dim:
        raise ModelLoadError(
            f"metadata.json of {metadata.model} {metadata.version}: input lists {len(source.columns)} columns "
            f"but its shape says {spec.dim}"
        )
    return spec


def verified_version(repo: Path, model: str, version: str) -> model_repo.ModelVersion:
    """Resolve and digest-check a version; a missing or modified file is a ModelLoadError."""
    try:
        path = model_repo.resolve(Path(repo), model, version)
        return model_repo.load_version(path)
    except model_repo.DigestMismatch as e:
        raise ModelLoadError(f"refusing to serve a tampered model version: {e}") from e
    except model_repo.ModelRepoError as e:
        raise ModelLoadError(str(e)) from e


def decide(
    loaded: model_repo.ModelVersion,
    variant: str,
    providers: Sequence[str] | None,
    available: Sequence[str],
) -> Choice:
    provider_choice = choose_providers(providers, available)
    variant_choice = choose_variant(variant, loaded.spec, gpu=provider_choice.gpu)
    return Choice(loaded.path, provider_choice, variant_choice)


def after_fallback(
    choice: Choice, metadata: model_repo.ModelMetadata, actual: Sequence[str], variant: str
) -> Choice | None:
    """A new choice when ONNX Runtime silently fell back across the GPU/CPU line, else None.

    ORT drops a provider it cannot load (CUDA libraries missing, no TensorRT) and runs on the next;
    an fp16 variant picked for a GPU would then run slowly on CPU, so the variant is chosen again for
    what actually runs. A configured variant is kept as configured.
    """
    if not actual or (actual[0] in GPU_PROVIDERS) == choice.providers.gpu:
        return None
    providers = ProviderChoice(tuple(actual), f"{choice.providers.reason}, but ONNX Runtime fell back to {actual[0]}")
    if variant != "auto":
        return replace(choice, providers=providers)
    return replace(choice, providers=providers, variant=choose_variant("auto", metadata, gpu=providers.gpu))


def _preload_gpu_libraries() -> None:
    # onnxruntime-gpu finds CUDA and cuDNN in the nvidia-* wheels (the `gpu` extra) only when asked to.
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # best effort: a system CUDA on the library path works as well
        log.warning("could not preload CUDA/cuDNN from the nvidia wheels (%s); relying on the system libraries", e)


class Runtime:
    """One InferenceSession over one variant file. `run` is thread-safe (ONNX Runtime's own guarantee)."""

    def __init__(self, path: Path, providers: Sequence[str], spec: TensorSpec, intra_op_threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's warnings go to stderr per session otherwise
        if GPU_PROVIDERS.intersection(providers):
            _preload_gpu_libraries()
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types, all meaning "cannot load"
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {e}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [spec.input_name] or spec.output_name not in [o.name for o in outputs]:
            raise ModelLoadError(
                f"{path.name} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}, "
                f"but metadata.json declares input '{spec.input_name}' and output '{spec.output_name}'"
            )
        numpy_type = _NUMPY_TYPES.get(inputs[0].type)
        if numpy_type is None:
            raise ModelLoadError(f"{path.name} takes {inputs[0].type}; expected a float tensor")
        self.input_dtype = np.dtype(numpy_type)
        self.providers = tuple(self.session.get_providers())
        self.provider = self.providers[0]
        self._feed = spec.input_name
        self._fetch = [spec.output_name]
        self._warm_up(spec, path)

    def _warm_up(self, spec: TensorSpec, path: Path) -> None:
        # The first run builds kernels (and TensorRT engines); doing it here keeps it off the first request.
        try:
            out = self.run(np.zeros((1, spec.dim), dtype=np.float32))
        except Exception as e:
            raise ModelLoadError(f"{path.name} fails on a zero row: {e}") from e
        if out.shape != (1, 1):
            raise ModelLoadError(f"{path.name} returns shape {list(out.shape)} for one row; expected [1, 1]")

    def rows_independent(self, dim: int) -> bool:
        """Whether a row's score ignores the other rows of its batch, checked on probe rows.

        The inference lane stacks waiting requests into one run; that is only sound when the graph
        scores rows independently. Most do, but not, for example, dynamically quantized graphs, whose
        activation scale comes from the whole batch. Probing the real session settles it for this file.
        """
        probe = np.stack(
            [
                np.zeros(dim, np.float32),
                np.ones(dim, np.float32),
                np.full(dim, 1000.0, np.float32),
                np.linspace(-3.0, 3.0, dim, dtype=np.float32),
            ]
        )
        try:
            stacked = self.run(probe)
            alone = np.concatenate([self.run(probe[i : i + 1]) for i in range(len(probe))])
        except Exception:  # a model that rejects some probe values: do not stack rather than guess
            return False
        return bool(np.allclose(stacked, alone, rtol=1e-5, atol=1e-6, equal_nan=True))

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Scores a float32 [n, D] matrix; returns float32 [n, 1]."""
        if rows.dtype != self.input_dtype:
            rows = rows.astype(self.input_dtype)
        out = self.session.run(self._fetch, {self._feed: rows})[0]
        return out if out.dtype == _FLOAT32 else out.astype(_FLOAT32)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())
