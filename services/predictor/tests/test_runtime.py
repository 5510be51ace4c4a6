"""The ONNX Runtime adapter and the model object, in process, on the tiny real model."""

from __future__ import annotations

import asyncio
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from flywheel_core import model_repo
from flywheel_predictor import ModelLoadError, OnnxModel, Settings
from flywheel_predictor._runtime import Choice, Runtime, after_fallback, tensor_spec
from flywheel_predictor._selection import ProviderChoice, VariantChoice
from flywheel_predictor._validation import TensorSpec

import tiny_model

SPEC = TensorSpec("input", tiny_model.DIM, "probability")
ROWS = np.random.default_rng(5).normal(size=(4, tiny_model.DIM)).astype(np.float32)


def test_runtime_scores_rows_like_the_reference(tmp_path: Path) -> None:
    runtime = Runtime(tiny_model.build(tmp_path / "m.onnx"), ["CPUExecutionProvider"], SPEC, intra_op_threads=1)
    assert runtime.provider == "CPUExecutionProvider"
    np.testing.assert_allclose(runtime.run(ROWS), tiny_model.reference(ROWS), rtol=1e-6)


def test_runtime_refuses_a_model_whose_input_name_differs_from_metadata(tmp_path: Path) -> None:
    path = tiny_model.build(tmp_path / "m.onnx", input_name="features")
    with pytest.raises(ModelLoadError, match="declares input 'input'"):
        Runtime(path, ["CPUExecutionProvider"], SPEC, intra_op_threads=1)


def test_runtime_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        Runtime(path, ["CPUExecutionProvider"], SPEC, intra_op_threads=1)


def gpu_choice(variant: str = "fp16") -> Choice:
    providers = ProviderChoice(("CUDAExecutionProvider", "CPUExecutionProvider"), "providers=auto: best available")
    return Choice(Path("/repo/fraud/v1"), providers, VariantChoice(variant, f"model.{variant}.onnx", "variant=auto"))


METADATA = model_repo.parse_metadata(
    {
        **tiny_model.metadata(
            variants={
                "fp32": {"file": "model.fp32.onnx", "published": True, "cpu_latency_us": 200},
                "fp16": {"file": "model.fp16.onnx", "published": True, "cpu_latency_us": 800},
            }
        ),
        "model": "fraud",
        "version": "v1",
        "files": {"model.fp32.onnx": "0" * 64, "model.fp16.onnx": "1" * 64},
    }
)


def test_a_fallback_from_gpu_to_cpu_chooses_the_variant_again_for_cpu() -> None:
    changed = after_fallback(gpu_choice(), METADATA, ["CPUExecutionProvider"], variant="auto")
    assert changed is not None
    assert changed.variant.variant == "fp32"
    assert changed.providers.providers == ("CPUExecutionProvider",)
    assert "fell back to CPUExecutionProvider" in changed.providers.reason


def test_no_fallback_changes_nothing() -> None:
    assert after_fallback(gpu_choice(), METADATA, ["CUDAExecutionProvider", "CPUExecutionProvider"], "auto") is None


def test_a_fallback_keeps_a_configured_variant() -> None:
    changed = after_fallback(gpu_choice(), METADATA, ["CPUExecutionProvider"], variant="fp16")
    assert changed is not None and changed.variant.variant == "fp16"


def test_the_tensor_spec_comes_from_the_typed_metadata() -> None:
    assert tensor_spec(METADATA) == TensorSpec("input", tiny_model.DIM, "probability", "FP32")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"datatype": "FP16"}, "fraud v1: input is FP16 .* serves FP32 \\[-1, D\\] models"),
        ({"shape": [1, tiny_model.DIM]}, "serves FP32 \\[-1, D\\] models"),
        (
            {"shape": [-1, tiny_model.DIM + 1]},
            f"lists {tiny_model.DIM} columns but its shape says {tiny_model.DIM + 1}",
        ),
    ],
)
def test_metadata_whose_input_this_predictor_cannot_serve_is_refused_at_load(changes: dict, words: str) -> None:
    document = METADATA.model_dump()
    document["input"].update(changes)
    with pytest.raises(ModelLoadError, match=words):
        tensor_spec(model_repo.parse_metadata(document))


def test_the_model_survives_pickling_with_its_own_session(repo: Path) -> None:
    """kserve spawns workers by pickling the model: the copy must reopen the same version and variant."""
    model = OnnxModel(Settings(model_repo=repo))
    model.load()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.runtime is not model.runtime
    assert (copy.version, copy.variant, copy.ready) == ("v1", "fp32", True)
    out = asyncio.run(copy.infer(ROWS))
    np.testing.assert_allclose(out, tiny_model.reference(ROWS), rtol=1e-6)


def test_inference_threads_zero_scores_on_the_calling_thread(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = OnnxModel(Settings(model_repo=repo, inference_threads=0))
    model.load()
    run, threads = model.runtime.run, []

    def recorded(rows: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return run(rows)

    monkeypatch.setattr(model.runtime, "run", recorded)
    np.testing.assert_allclose(asyncio.run(model.infer(ROWS)), tiny_model.reference(ROWS), rtol=1e-6)
    assert threads == [threading.get_ident()]  # the session ran here, not on an inference lane's thread


def test_a_row_independent_model_is_stacked(repo: Path) -> None:
    model = OnnxModel(Settings(model_repo=repo))
    model.load()
    assert model.batch_max_rows == 64
    assert "batch_max_rows=64" in model.describe()


def test_a_model_whose_rows_depend_on_the_batch_is_never_stacked(tmp_path: Path) -> None:
    """E.g. dynamic quantization: scales come from the whole batch, so stacking would change scores."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["batch_mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["input", "batch_mean"], ["centred"]),
            helper.make_node("MatMul", ["centred", "ones"], ["total"]),
            helper.make_node("Sigmoid", ["total"], ["probability"]),
        ],
        "batch_coupled",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", tiny_model.DIM])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.ones((tiny_model.DIM, 1), np.float32), "ones")],
    )
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_proto.ir_version = 8
    staging = tiny_model.model_repo.staging_path(tmp_path, "fraud")
    tiny_model.onnx.save(model_proto, staging / "model.fp32.onnx")
    tiny_model.model_repo.publish(staging, tmp_path, "fraud", tiny_model.metadata())

    model = OnnxModel(Settings(model_repo=tmp_path))
    model.load()
    assert model.batch_max_rows == 1
    assert "not stacked" in model.describe()
