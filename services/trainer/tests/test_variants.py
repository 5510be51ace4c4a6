"""Variants: the gate keeps bad ones out, FP16 keeps raw values exact, latency is measured."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from flywheel_trainer import GateThresholds, gate
from flywheel_trainer._export import convert_fp16, dense_nodes, export_fp32, quantize_int8
from flywheel_trainer._model import N_NUMERIC, FraudNet, numeric_statistics
from flywheel_trainer._variants import measure_latency, run_onnx

from test_model import synthetic

THRESHOLDS = GateThresholds(max_auc_diff=0.005, max_probability_diff=0.02)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An fp32 export of an untrained model on synthetic rows (export is the slow part: once per module)."""
    x, y = synthetic(800, seed=3)
    model = FraudNet(*numeric_statistics(x)).eval()
    return export_fp32(model, tmp_path_factory.mktemp("fp32") / "model.fp32.onnx", x), x, y


def _shifted_copy(fp32_path, path, shift: float):
    """The fp32 graph with `shift` added to its probability: a variant whose outputs are off."""
    model = onnx.load(str(fp32_path))
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["raw_probability" if o == output else o for o in node.output]
    graph.initializer.append(helper.make_tensor("shift", TensorProto.FLOAT, [], [shift]))
    graph.node.append(helper.make_node("Add", ["raw_probability", "shift"], [output], name="off_by_shift"))
    onnx.save(model, str(path))
    return path


def test_gate_passes_a_faithful_variant_and_reports_the_figures():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.6 + rng.random(500) * 0.4, 0, 1)
    result = gate(p, p + 1e-4, y, THRESHOLDS)
    assert result["passed"] and result["reason"] == "within thresholds"
    assert result["probability_diff"] <= 1.1e-4 and result["auc_diff"] < 1e-3


def test_gate_rejects_a_variant_whose_outputs_are_off(exported, tmp_path):
    fp32, x, y = exported
    off = _shifted_copy(fp32, tmp_path / "model.off.onnx", 0.05)
    result = gate(run_onnx(fp32, x), run_onnx(off, x), y, THRESHOLDS)
    assert not result["passed"]
    assert "max abs probability difference 0.05" in result["reason"]


def test_gate_rejects_a_variant_that_ranks_worse_even_if_close():
    y = np.array([0, 1] * 200)
    reference = np.where(y == 1, 0.6, 0.4)
    candidate = reference.copy()
    candidate[:40] = 0.5  # ties blur the ranking of 10% of rows while staying within 0.1
    result = gate(reference, candidate, y, GateThresholds(0.005, 0.5))
    assert not result["passed"] and "ROC-AUC" in result["reason"]


def test_gate_rejects_non_finite_outputs():
    y = np.array([0, 1, 0, 1])
    result = gate(np.full(4, 0.5), np.array([0.5, np.nan, 0.5, 0.5]), y, THRESHOLDS)
    assert not result["passed"] and "NaN" in result["reason"]


def test_fp16_variant_keeps_raw_amounts_and_large_bucket_ids_exact(exported, tmp_path):
    fp32, x, y = exported
    fp16 = convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    rows = x[:64].copy()
    rows[:, 2] = 250_000.0  # amount_sum_24h beyond FP16's 65504
    rows[:32, N_NUMERIC] = 4095.0  # odd ids above 2048 are not representable in FP16
    rows[32:, N_NUMERIC] = 4094.0
    reference, half = run_onnx(fp32, rows), run_onnx(fp16, rows)
    assert np.all(np.isfinite(half))
    assert np.max(np.abs(half - reference)) < 0.01
    graph = onnx.load(str(fp16)).graph
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = {init.name: init.data_type for init in graph.initializer}
    assert weights["embeddings.0.weight"] == TensorProto.FLOAT16


def test_int8_variant_is_static_qdq_and_can_keep_layers_in_float(exported, tmp_path):
    fp32, x, _ = exported
    dense = dense_nodes(fp32)
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", x[:256], exclude=dense[:1])
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert np.all(np.isfinite(run_onnx(int8, x)))


def test_latency_is_measured_for_single_rows_and_batches(exported):
    fp32, x, _ = exported
    figures = measure_latency(fp32, x, threads=1, warmup=2, repeats=5)
    assert figures["batch_1_us"] > 0 and figures["batch_256_us"] > 0
    assert figures["repeats"] == 5 and figures["provider"] == "CPUExecutionProvider"
