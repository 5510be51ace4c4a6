"""ONNX export of the torch model and its FP16 and INT8 variants.

All variants keep FP32 input and output so that callers never change with the variant. In the FP16
variant the preprocessing stays in FP32 (`_fp16`). The INT8 variant is static
QDQ quantisation of the dense layers, calibrated on training rows; embedding lookups stay float, and so
do the dense layers named in `exclude` (the pipeline tries fewer exclusions first and keeps the first
variant that passes the gate).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from flywheel_core import schema

from ._errors import ExportError
from ._fp16 import convert_fp16
from ._model import FraudNet

__all__ = ["RowsReader", "convert_fp16", "dense_nodes", "export_fp32", "quantize_int8"]

log = logging.getLogger("flywheel_trainer")

_DENSE_OPS = ("Gemm", "MatMul")


def export_fp32(model: FraudNet, path: Path, example: np.ndarray) -> Path:
    """Export `model` to `path`: input `input` FP32 [batch, D], output `probability` FP32 [batch, 1]."""
    model.eval()
    # The exporter and its graph optimiser log every rewrite at INFO and every torchvision op they could
    # not register as a warning; none of it is actionable here, and it would drown the stage lines.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(
            model,
            (torch.from_numpy(np.ascontiguousarray(example[:2], dtype=np.float32)),),
            dynamo=True,
            input_names=[schema.INPUT_NAME],
            output_names=[schema.OUTPUT_NAME],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy (dynamo=False) exporter returns None
        raise ExportError("torch.onnx.export(dynamo=True) returned no ONNX program")
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path


class RowsReader(CalibrationDataReader):
    """Feeds calibration rows to onnxruntime's quantiser in fixed-size batches."""

    def __init__(self, rows: np.ndarray, batch: int = 256) -> None:
        self._rows = np.ascontiguousarray(rows, dtype=np.float32)
        self._batch = batch
        self._iter = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self._rows), self._batch):
            yield {schema.INPUT_NAME: self._rows[start : start + self._batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def dense_nodes(path: Path) -> list[str]:
    """Names of the dense (Gemm/MatMul) nodes in graph order; the last one is the output layer."""
    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type in _DENSE_OPS]


def quantize_int8(fp32_path: Path, path: Path, calibration_rows: np.ndarray, exclude: list[str] | None = None) -> Path:
    """Static QDQ INT8 of the dense layers (minus `exclude`), calibrated on `calibration_rows`."""
    prepared = path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            RowsReader(calibration_rows),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(_DENSE_OPS),
            nodes_to_exclude=list(exclude or []),
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    finally:
        prepared.unlink(missing_ok=True)
    # The quantiser declares every domain it knows; keep the ones the graph uses, so a runtime or
    # execution provider that lacks an unused domain does not refuse the model.
    model = onnx.load(str(path))
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    return path
