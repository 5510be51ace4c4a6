"""One model version as KServe sees it: a `kserve.Model` over one verified ONNX Runtime session.

Each loaded version is one OnnxModel (`_versions.VersionSet` owns them); KServe registers only the
default one, and the data plane hands a request to the version it names. KServe's own handlers call
`predict` (V1 dicts, V2 `InferRequest`s including binary tensors and CloudEvents); the fast path calls
`infer` directly. Both validate through `_validation` and score on the inference lane's threads
(`_lane`), so the event loop never waits on ONNX Runtime.

Several workers: kserve 0.21 starts them with multiprocessing's *spawn* and pickles the model into
each child. A session cannot be pickled, so `__getstate__` drops it and `__setstate__` opens the same
version directory (digests verified again) with the provider and variant the parent chose and logged.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import orjson
from kserve import InferOutput, InferRequest, InferResponse, Model

from flywheel_core import model_repo

from ._config import Settings
from ._errors import InferenceFailed, InvalidRequest, UnsupportedMediaType, VersionUnavailable
from ._lane import InferenceLane
from ._metrics import ModelMetrics
from ._runtime import Choice, Runtime, after_fallback, available_providers, decide, tensor_spec, verified_version
from ._validation import TensorSpec, is_json, parse_v1, parse_v2


class OnnxModel(Model):
    """One published model version served by ONNX Runtime: `version` ('vN'), or MODEL_VERSION when None."""

    def __init__(self, settings: Settings, version: str | None = None) -> None:
        super().__init__(settings.model_name)
        self.settings = settings
        self.requested_version = version or settings.model_version
        self.choice: Choice | None = None
        self._drop_runtime()

    def _drop_runtime(self) -> None:
        self.version_metadata: model_repo.ModelMetadata | None = None
        """The loaded version's metadata.json, typed (validated once, by model_repo.load_version)."""
        self.version = ""
        self.spec: TensorSpec | None = None
        self.runtime_file = ""
        self.batch_max_rows = 1
        self.runtime: Runtime | None = None
        self.metrics: ModelMetrics | None = None
        self._lane: InferenceLane | None = None

    def load(self) -> bool:
        """Resolve, verify, choose provider and variant, open and warm the session. Raises ModelLoadError."""
        s = self.settings
        loaded = verified_version(s.model_repo, s.model_name, self.requested_version)
        self.choice = decide(loaded, s.variant, s.provider_list, available_providers())
        self._open(loaded)
        assert self.runtime is not None and self.metrics is not None  # _open sets both
        changed = after_fallback(self.choice, loaded.spec, self.runtime.providers, s.variant)
        if changed is not None:
            self.choice = changed
            if changed.variant.file != self.runtime_file:
                self.metrics.retire()
                self._close_lane()
                self._open(loaded)
        self.ready = True
        return self.ready

    def _open(self, loaded: model_repo.ModelVersion) -> None:
        assert self.choice is not None
        self.version_metadata, self.version = loaded.spec, loaded.version
        self.spec = tensor_spec(loaded.spec)
        self.runtime_file = self.choice.variant.file
        self.runtime = Runtime(
            loaded.path / self.choice.variant.file,
            self.choice.providers.providers,
            self.spec,
            self.settings.intra_op_threads,
        )
        self.metrics = ModelMetrics(self.name, self.version, self.choice.variant.variant, self.runtime.provider)
        self.batch_max_rows = self.settings.batch_max_rows
        if self.batch_max_rows > 1 and not self.runtime.rows_independent(self.spec.dim):
            self.batch_max_rows = 1
        threads = self.settings.inference_threads
        self._lane = (
            InferenceLane(self.runtime.run, threads, self.batch_max_rows, name="onnxruntime") if threads else None
        )

    def _close_lane(self) -> None:
        if self._lane is not None:
            self._lane.close()

    def close(self) -> None:
        """Stop serving this version (unloaded). Rows already handed to its inference threads are still
        scored (the lane stops after them); the session goes when the last of them is done."""
        self.ready = False
        if self.metrics is not None:
            self.metrics.retire()
        self._close_lane()
        self._lane = None
        self.runtime = None

    def summary(self) -> str:
        """What this version runs on, for the load and unload log lines."""
        assert self.choice is not None
        provider = self.runtime.provider if self.runtime is not None else self.choice.providers.primary
        return (
            f"model={self.name} version={self.version} variant={self.choice.variant.variant} "
            f"provider={provider} from {self.choice.version_path}"
        )

    def describe(self) -> str:
        """The start-up line: what is served, on what, and why."""
        assert self.choice is not None and self.runtime is not None
        provider = self.runtime.provider
        primary = self.choice.providers.primary
        fell_back = "" if provider == primary else f" (ONNX Runtime fell back from {primary})"
        stacking = f"batch_max_rows={self.batch_max_rows}"
        if self.batch_max_rows < self.settings.batch_max_rows:
            stacking += " (rows of this model depend on their batch: requests are not stacked)"
        return (
            f"serving model={self.name} version={self.version} variant={self.choice.variant.variant} "
            f"provider={provider}{fell_back} from {self.choice.version_path}; {self.choice.providers.reason}; "
            f"{self.choice.variant.reason}; workers={self.settings.workers} "
            f"intra_op_threads={self.settings.intra_op_threads} inference_threads={self.settings.inference_threads} "
            f"{stacking} fast_path={self.settings.fast_path}"
        )

    def loaded_spec(self) -> TensorSpec:
        """The input and output of the loaded version; VersionUnavailable when none was loaded."""
        if self.spec is None:
            raise VersionUnavailable(f"model '{self.name}' has no loaded version; send the request again")
        return self.spec

    @property
    def variant(self) -> str:
        return self.choice.variant.variant if self.choice else ""

    # -- spawn support -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("version_metadata", "spec", "runtime_file", "batch_max_rows", "runtime", "metrics", "_lane"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._drop_runtime()
        if self.choice is not None:
            self._open(verified_version_at(self.choice.version_path))

    # -- inference -----------------------------------------------------------------------------------
    async def infer(self, rows: np.ndarray) -> np.ndarray:
        """Scores validated rows on the inference threads (or inline with INFERENCE_THREADS=0); float32 [n, 1]."""
        lane, runtime, metrics = self._lane, self.runtime, self.metrics
        if (lane is None and runtime is None) or metrics is None:  # metrics: None only before the first load
            raise VersionUnavailable(f"model '{self.name}' version {self.version} was unloaded; send the request again")
        try:
            if lane is not None:
                out, seconds = await lane.score(rows)
            else:
                assert runtime is not None
                out, seconds = _run_inline(runtime, rows)
        except Exception as e:  # rows passed validation, so this is the model or runtime failing
            raise InferenceFailed(f"ONNX Runtime failed on a valid request: {e}") from e
        metrics.inference_seconds.observe(seconds)
        metrics.rows.inc(len(rows))
        return out

    async def predict(
        self,
        payload: dict | InferRequest | bytes,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        """KServe's route into the model (binary tensors, CloudEvents, or FLYWHEEL_PREDICTOR_FAST_PATH=false)."""
        spec = self.loaded_spec()
        if isinstance(payload, InferRequest):
            request = parse_v2(_as_body(payload), spec)
            out = await self.infer(request.rows)
            self._count("v2")
            output = InferOutput(name=spec.output_name, shape=list(out.shape), datatype="FP32", data=out)
            return InferResponse(
                response_id=request.request_id or str(uuid.uuid4()),
                model_name=self.name,
                model_version=self.version,
                infer_outputs=[output],
                use_binary_outputs=payload.use_binary_outputs,
            )
        if isinstance(payload, (bytes, bytearray, str)):
            payload = _undecoded_json(payload, (headers or {}).get("content-type", ""))
        out = await self.infer(parse_v1(payload, spec.dim))
        self._count("v1")
        return {"predictions": out.tolist()}

    def _count(self, protocol: str) -> None:
        if self.metrics is not None:  # infer raised if it were None
            self.metrics.requests(protocol, 200).inc()

    def get_input_types(self) -> list[dict[str, Any]]:
        return [_tensor_type(self._loaded_metadata().input)]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_tensor_type(self._loaded_metadata().output)]

    def _loaded_metadata(self) -> model_repo.ModelMetadata:
        if self.version_metadata is None:
            raise VersionUnavailable(f"model '{self.name}' has no loaded version; send the request again")
        return self.version_metadata


def _tensor_type(tensor: model_repo.TensorSpec) -> dict[str, Any]:
    """One tensor in KServe's V2 model metadata form."""
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _undecoded_json(body: bytes | bytearray | str, content_type: str) -> Any:
    """KServe hands the model the raw body when the content type is not exactly one it decodes, which
    includes `application/json; charset=utf-8`: decode JSON ourselves, refuse anything else (415)."""
    if not is_json(content_type.encode("latin-1")):
        raise UnsupportedMediaType(f"content-type {content_type!r} is not JSON; send application/json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from e


def verified_version_at(path: Path) -> model_repo.ModelVersion:
    """The version at an exact directory (a worker must serve what its parent chose, not a newer latest)."""
    return verified_version(path.parent.parent, path.parent.name, path.name)


def _as_body(request: InferRequest) -> dict[str, Any]:
    """An InferRequest back in JSON form, so both routes share one validator and one set of messages."""
    inputs = []
    for tensor in request.inputs:
        data = tensor.data
        if isinstance(data, np.ndarray):
            data = data.ravel().tolist()
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data})
    outputs = [{"name": o.name} for o in request.request_outputs] if request.request_outputs else None
    return {"id": request.id, "inputs": inputs, "outputs": outputs}


def _run_inline(runtime: Runtime, rows: np.ndarray) -> tuple[np.ndarray, float]:
    started = perf_counter()
    out = runtime.run(rows)
    return out, perf_counter() - started
