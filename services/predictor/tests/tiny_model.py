"""A tiny real ONNX model published into a model repo, for the tests and the benchmark.

probability = sigmoid(input @ W + b) with input FP32 [-1, D], D = flywheel_core.schema.INPUT_DIM, named
as the contract says (`input` -> `probability`). `bias` (b, default -1) tells versions apart: publish
one with another bias and its scores differ from the first's. Published through flywheel_core.model_repo.publish so
the directory, metadata.json and digests are exactly what the trainer produces.

Also a script: `python tiny_model.py --repo model_repo` publishes the next version of `fraud`.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flywheel_core import model_repo, schema

DIM = schema.INPUT_DIM
OPSET = 17


BIAS = -1.0


def weights(dim: int = DIM, bias: float = BIAS) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, small weights so every column moves the output a little and results are reproducible."""
    w = (np.linspace(-0.5, 0.5, dim, dtype=np.float32) / np.float32(dim)).reshape(dim, 1)
    b = np.array([bias], dtype=np.float32)
    return w, b


def reference(rows: np.ndarray, bias: float = BIAS) -> np.ndarray:
    """What the model computes, in numpy: the tests compare served predictions with this."""
    w, b = weights(rows.shape[1], bias)
    logits = rows.astype(np.float64) @ w.astype(np.float64) + b
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def build(
    path: Path, dim: int = DIM, input_name: str = "input", output_name: str = "probability", bias: float = BIAS
) -> Path:
    w, b = weights(dim, bias)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [output_name]),
        ],
        "tiny_fraud",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="flywheel-tests")
    model.ir_version = 8  # readable by every onnxruntime the services pin
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def metadata(dim: int = DIM, variants: Mapping[str, Mapping] | None = None) -> dict:
    columns = schema.COLUMNS if dim == schema.INPUT_DIM else [{"name": f"c{i}", "kind": "numeric"} for i in range(dim)]
    return {
        "created_at": "2026-01-01T00:00:00Z",
        "feature_service": schema.FEATURE_SERVICE,
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, dim], "columns": columns},
        "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
        "defaults": {name: 0.0 for name in schema.NUMERIC_FEATURES},
        "variants": dict(variants or {"fp32": {"file": "model.fp32.onnx", "published": True, "gate": {}}}),
        "metrics": {},
        "slices": {},
        "lineage": {"source": "flywheel-predictor tests: tiny_model.py"},
    }


def publish(repo: Path, model: str = "fraud", variants: Mapping[str, Mapping] | None = None, bias: float = BIAS) -> Path:
    """Publish the next version of `model` with the tiny network as every listed variant's file."""
    staging = model_repo.staging_path(Path(repo), model)
    fp32 = build(staging / "model.fp32.onnx", bias=bias)
    for info in (variants or {}).values():
        if info.get("published") and info["file"] != fp32.name:
            shutil.copyfile(fp32, staging / info["file"])
    (staging / "MODEL_CARD.md").write_text("# tiny fraud model\n\nA fixed logistic regression for tests and benchmarks.\n")
    return model_repo.publish(staging, Path(repo), model, metadata(variants=variants))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", default="fraud")
    args = parser.parse_args()
    print(publish(args.repo, args.model))


if __name__ == "__main__":
    main()
