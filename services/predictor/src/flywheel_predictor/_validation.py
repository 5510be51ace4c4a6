"""Turn a parsed V1 or V2 request body into the model's input matrix, or say exactly what is wrong.

Pure functions over already-parsed JSON: the fast path and the KServe-path model both call them, so
both routes accept and refuse the same requests with the same messages. Every refusal is an
InvalidRequest (400) naming the field; nothing a client sends can reach ONNX Runtime malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ._errors import InvalidRequest

_NUMBERS = frozenset((int, float))


@dataclass(frozen=True)
class TensorSpec:
    """The model's single input and output, as metadata.json declares them."""

    input_name: str
    dim: int
    output_name: str
    datatype: str = "FP32"


@dataclass(frozen=True)
class V2Request:
    rows: np.ndarray
    request_id: str | None
    binary_output: bool
    """The client asked for the output as raw bytes (binary tensor extension) rather than a JSON list."""


def is_json(content_type: bytes) -> bool:
    """application/json or application/*+json, with any parameters (charset=...)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


_JSON_NAMES = {str: "string", bool: "boolean", type(None): "null", list: "list", dict: "object"}


def _check_numbers(types: set[type], field: str) -> None:
    if not types <= _NUMBERS:
        names = sorted(_JSON_NAMES.get(t, t.__name__) for t in types - _NUMBERS)
        raise InvalidRequest(f"'{field}' must hold only numbers; found {', '.join(names)}")


def _to_float32(values: list, field: str) -> np.ndarray:
    try:
        matrix = np.array(values, dtype=np.float32)
    except OverflowError as e:
        raise InvalidRequest(f"'{field}' holds an integer too large for FP32") from e
    # JSON has no NaN or Infinity literals, but numbers beyond the FP32 range become inf here.
    if not np.isfinite(matrix).all():
        raise InvalidRequest(f"'{field}' holds a number outside the FP32 range (about ±3.4e38)")
    return matrix


def matrix_from_rows(rows: Any, dim: int, field: str) -> np.ndarray:
    """A [n, dim] float32 matrix from a JSON list of rows of `dim` numbers each."""
    if type(rows) is not list or not rows:
        raise InvalidRequest(f"'{field}' must be a non-empty list of rows of {dim} numbers; got {_kind(rows)}")
    types: set[type] = set()
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != dim:
            raise InvalidRequest(
                f"'{field}[{i}]' must be a list of {dim} numbers (the model's columns); got {_kind(row)}"
            )
        types.update(map(type, row))
    _check_numbers(types, field)
    return _to_float32(rows, field)


def parse_v1(body: Any, dim: int) -> np.ndarray:
    """KServe V1: {"instances": [[...dim numbers...], ...]}."""
    if type(body) is not dict:
        raise InvalidRequest(f"a V1 request body must be a JSON object with 'instances'; got {_kind(body)}")
    if "instances" not in body:
        raise InvalidRequest(f"a V1 request needs 'instances': a list of rows of {dim} numbers")
    return matrix_from_rows(body["instances"], dim, "instances")


def _v2_input(body: Any, spec: TensorSpec) -> dict:
    if type(body) is not dict:
        raise InvalidRequest(f"a V2 request body must be a JSON object with 'inputs'; got {_kind(body)}")
    inputs = body.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise InvalidRequest(f"'inputs' must be a list of exactly one tensor object named '{spec.input_name}'")
    tensor = inputs[0]
    name = tensor.get("name")
    if name != spec.input_name:
        shown = "no name" if name is None else f"unknown input {name!r}"
        raise InvalidRequest(f"'inputs[0]' has {shown}: the model takes one input named '{spec.input_name}'")
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise InvalidRequest(f"input '{name}' has datatype {datatype!r}: the model takes {spec.datatype}")
    return tensor


def _v2_shape(tensor: dict, spec: TensorSpec) -> int:
    shape = tensor.get("shape")
    if (
        type(shape) is not list
        or len(shape) != 2
        or not all(type(n) is int for n in shape)
        or shape[0] < 1
        or shape[1] != spec.dim
    ):
        raise InvalidRequest(f"input '{spec.input_name}' has shape {shape!r}: expected [n, {spec.dim}] with n >= 1")
    return shape[0]


def parse_v2(body: Any, spec: TensorSpec, tail: bytes | None = None) -> V2Request:
    """Open Inference Protocol: one FP32 input [n, dim], data flat (row-major) or nested by row.

    `tail` holds the bytes after the JSON part of a binary-extension request; an input without `data`
    then takes its `parameters.binary_data_size` bytes from it (little-endian FP32).
    """
    tensor = _v2_input(body, spec)
    n = _v2_shape(tensor, spec)
    if tail is not None and "data" not in tensor:
        rows = _binary_rows(tensor, n, spec, tail)
    else:
        rows = _json_rows(tensor.get("data"), n, spec)
    request_id = body.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidRequest(f"'id' must be a string; got {_kind(request_id)}")
    parameters = body.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        raise InvalidRequest(f"'parameters' must be an object; got {_kind(parameters)}")
    binary = bool((parameters or {}).get("binary_data_output", False))
    return V2Request(rows, request_id, _check_outputs(body.get("outputs"), spec, binary))


def parse_v2_binary(body: bytes, header_length: bytes, spec: TensorSpec) -> V2Request:
    """A binary-extension request: `header_length` bytes of JSON (inference-header-content-length), then tensors."""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidRequest(
            f"inference-header-content-length must be an integer; got {header_length.decode('latin-1')!r}"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidRequest(f"inference-header-content-length is {length} but the body has {len(body)} bytes")
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the JSON part of the request (first {length} bytes) is not valid JSON: {e}") from e
    return parse_v2(document, spec, tail=body[length:])


def _json_rows(data: Any, n: int, spec: TensorSpec) -> np.ndarray:
    field = "inputs[0].data"
    if type(data) is not list:
        raise InvalidRequest(f"'{field}' must be a list of numbers; got {_kind(data)}")
    if data and type(data[0]) is list:
        if len(data) != n:
            raise InvalidRequest(f"'{field}' has {len(data)} rows but shape says {n}")
        return matrix_from_rows(data, spec.dim, field)
    if len(data) != n * spec.dim:
        raise InvalidRequest(f"'{field}' has {len(data)} numbers but shape [{n}, {spec.dim}] needs {n * spec.dim}")
    _check_numbers(set(map(type, data)), field)
    return _to_float32(data, field).reshape(n, spec.dim)


def _binary_rows(tensor: dict, n: int, spec: TensorSpec, tail: bytes) -> np.ndarray:
    expected = n * spec.dim * 4
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if type(size) is not int or size != expected:
        raise InvalidRequest(
            f"input '{spec.input_name}' has binary_data_size {size!r}; FP32 [{n}, {spec.dim}] needs {expected} bytes"
        )
    if len(tail) < size:
        raise InvalidRequest(f"the body holds {len(tail)} bytes of tensor data but binary_data_size says {size}")
    rows = np.frombuffer(tail, dtype="<f4", count=n * spec.dim).reshape(n, spec.dim).astype(np.float32)
    if not np.isfinite(rows).all():
        raise InvalidRequest(f"input '{spec.input_name}' holds NaN or infinite values")
    return rows


def _check_outputs(outputs: Any, spec: TensorSpec, binary: bool) -> bool:
    """Checks requested outputs; returns whether the output goes back as binary (per-output flag wins)."""
    if outputs is None:
        return binary
    if type(outputs) is not list or not all(type(o) is dict for o in outputs):
        raise InvalidRequest("'outputs' must be a list of {\"name\": ...} objects")
    for requested in outputs:
        if requested.get("name") != spec.output_name:
            raise InvalidRequest(
                f"unknown output {requested.get('name')!r} requested: "
                f"the model has one output named '{spec.output_name}'"
            )
        parameters = requested.get("parameters")
        if type(parameters) is dict and "binary_data" in parameters:
            binary = bool(parameters["binary_data"])
    return binary
