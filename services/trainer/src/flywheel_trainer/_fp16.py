"""FP16 conversion that keeps the preprocessing and the I/O in FP32.

Why not onnxconverter-common's `convert_float_to_float16(keep_io_types=True, node_block_list=...)`:
with 1.16 it still inserts an FP16 cast between blocked FP32 nodes (it trusts the FP16 value_info it
rewrote), so raw amounts above 65504 became inf and the variant produced NaN. This pass is small and
explicit instead:

- the FP32 region is every node reachable from the graph input before the first weight (an embedding
  lookup, Concat, Gemm or MatMul); raw values and bucket ids are handled there, where FP32 is exact;
- float initializers used outside the region are stored in FP16 (a copy is kept when the region also
  uses them);
- a Cast to FP16 is inserted on each float edge leaving the region, and a Cast to FP32 before each
  graph output, so callers keep sending and receiving FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_STOP_OPS = ("Concat", "Gemm", "MatMul")


def fp32_region(graph: onnx.GraphProto) -> set[str]:
    """Names of the nodes reachable from the graph inputs before the first weight."""
    initializers = {init.name for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    region: set[str] = set()
    frontier = [value.name for value in graph.input]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            is_lookup = node.op_type == "Gather" and node.input[0] in initializers
            if node.name in region or is_lookup or node.op_type in _STOP_OPS:
                continue
            region.add(node.name)
            frontier.extend(node.output)
    return region


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    return types


def convert_fp16(fp32_path: Path, path: Path) -> Path:
    """Write the FP16 variant of the model at `fp32_path` to `path`."""
    model = onnx.load(str(fp32_path))
    graph = model.graph
    for node in graph.node:
        if not node.name:
            raise ValueError("every node needs a name to be placed in or out of the FP32 region")
    types = _elem_types(model)
    region = fp32_region(graph)
    inside_inputs = {name for node in graph.node if node.name in region for name in node.input}
    initializers = {init.name: init for init in graph.initializer}
    region_float_outputs = {
        o for node in graph.node if node.name in region for o in node.output if types.get(o) == TensorProto.FLOAT
    }
    region_float_outputs |= {
        value.name for value in graph.input if value.type.tensor_type.elem_type == TensorProto.FLOAT
    }

    half_initializers: dict[str, str] = {}  # fp32 initializer -> its fp16 twin
    casts: dict[str, str] = {}  # fp32 tensor leaving the region -> its fp16 cast
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name in region:
            new_nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            init = initializers.get(name)
            if init is not None and init.data_type == TensorProto.FLOAT:
                if name not in half_initializers:
                    twin = f"{name}_fp16" if name in inside_inputs else name
                    half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), twin)
                    if twin == name:
                        init.CopyFrom(half)
                    else:
                        graph.initializer.append(half)
                    half_initializers[name] = twin
                node.input[i] = half_initializers[name]
            elif name in region_float_outputs:
                if name not in casts:
                    casts[name] = f"{name}_to_fp16"
                    new_nodes.append(
                        helper.make_node(
                            "Cast", [name], [casts[name]], name=f"{name}_cast_fp16", to=TensorProto.FLOAT16
                        )
                    )
                node.input[i] = casts[name]
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == TensorProto.FLOAT:
                    attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float16)))
        new_nodes.append(node)

    produced_outside = {o for node in graph.node if node.name not in region for o in node.output}
    for output in graph.output:
        if output.name in produced_outside and output.type.tensor_type.elem_type == TensorProto.FLOAT:
            half_name = f"{output.name}_fp16"
            for node in new_nodes:
                node.output[:] = [half_name if o == output.name else o for o in node.output]
            new_nodes.append(
                helper.make_node(
                    "Cast", [half_name], [output.name], name=f"{output.name}_cast_fp32", to=TensorProto.FLOAT
                )
            )

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # the FP32 types recorded by the exporter no longer hold
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
