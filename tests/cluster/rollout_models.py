"""Publish the model versions the controller's control-plane tests roll out (run with the predictor's venv).

v1 and v2 are the predictor tests' tiny logistic model (services/predictor/tests/tiny_model.py) with different
biases: two real versions whose scores differ, both fast. v3 is the same model behind a stack of wide layers, so
the real predictor answers it correctly but an order of magnitude slower: a candidate that is harmful the way a
heavier model is, seen by the router's latency figures (no fault injection, no fake server).

    services/predictor/.venv/bin/python tests/cluster/rollout_models.py REPO
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "services" / "predictor" / "tests"))
from flywheel_core import model_repo  # noqa: E402

import tiny_model  # noqa: E402

WIDTH = 2048
LAYERS = 24


def build_slow(path: Path, dim: int = tiny_model.DIM) -> Path:
    rng = np.random.default_rng(3)
    w_in = (rng.standard_normal((dim, WIDTH)) / np.sqrt(dim)).astype(np.float32)
    w_mid = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W_in"], ["h0"]), helper.make_node("Tanh", ["h0"], ["a0"])]
    for i in range(1, LAYERS + 1):  # one shared weight keeps the file small; the work is per layer
        nodes += [helper.make_node("MatMul", [f"a{i - 1}", "W_mid"], [f"h{i}"]),
                  helper.make_node("Tanh", [f"h{i}"], [f"a{i}"])]
    nodes += [helper.make_node("ReduceMean", [f"a{LAYERS}"], ["m"], axes=[1], keepdims=1),
              helper.make_node("Add", ["m", "B"], ["logits"]),
              helper.make_node("Sigmoid", ["logits"], ["probability"])]
    graph = helper.make_graph(
        nodes, "slow_fraud",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w_in, "W_in"), numpy_helper.from_array(w_mid, "W_mid"),
                     numpy_helper.from_array(np.array([-1.0], np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="flywheel-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def main() -> None:
    repo = Path(sys.argv[1])
    tiny_model.publish(repo, bias=-1.0)  # v1
    tiny_model.publish(repo, bias=-1.1)  # v2
    staging = model_repo.staging_path(repo, "fraud")
    build_slow(staging / "model.fp32.onnx")
    (staging / "MODEL_CARD.md").write_text("# slow fraud model\n\nRight answers, slowly: a harmful candidate.\n")
    print(model_repo.publish(staging, repo, "fraud", tiny_model.metadata()))  # v3


if __name__ == "__main__":
    main()
