"""Reading inference-log CloudEvents as they arrive, unchanged, from KServe's logger, Seldon's executor,
Flywheel's transformer, or the plain JSON batch endpoint.

CloudEvents v1.0 binary mode (attributes in `ce-*` headers, percent-encoded, the payload as the body),
structured mode (`application/cloudevents+json`, the payload in `data`, or base64 in `data_base64`), or
batch mode (`application/cloudevents-batch+json`, HTTP binding section 3.3: a JSON array of structured-mode
events; Flywheel's transformer sends its records so, many events in one request). A hand parser for these
modes rather than the CloudEvents SDK: it is all the SDK would do here, and the tests check it against events
the SDK makes. A batch is all or nothing: one malformed event refuses the whole batch, naming its index
(`[3].data.inputs`), so a sender that retries never half-delivers one. The request and response of one
inference share `ce-id`; `_pairing` joins them. Payloads understood:

- Open Inference Protocol (V2): request `inputs` (the tensor named `input`, or the only numeric one,
  shape [n, d]; an optional BYTES `transaction_id` tensor gives row ids); response `outputs` (tensor
  `probability`, or the first numeric one), `model_name`, `model_version`.
- KServe V1: `{"instances": [[...], ...]}` / `{"predictions": [p, ...]}` (numbers, [p] or [p0, p1]).
- Seldon protocol: `{"data": {"ndarray": [[...]]}}` or `{"data": {"tensor": {"shape": [...], "values": [...]}}}`;
  a two-column response is predict_proba, and column 1 is the positive class.

Everything that is wrong is an `InvalidEvent` naming the header or field. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson

from ._errors import InvalidEvent, RequestError, UnsupportedEventType, UnsupportedMediaType

EVENT_TYPES: dict[str, tuple[str, str]] = {
    "org.kubeflow.serving.inference.request": ("kserve", "request"),
    "org.kubeflow.serving.inference.response": ("kserve", "response"),
    "io.seldon.serving.inference.request": ("seldon", "request"),
    "io.seldon.serving.inference.response": ("seldon", "response"),
}
SPEC_VERSIONS = ("1.0", "0.3")
ROW_ID_NAMES = ("transaction_id", "id", "ids")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@dataclass
class EventHalf:
    """One side of an inference, parsed. `x` for requests, `probabilities` for responses."""

    id: str
    role: str
    family: str
    time: float
    model: str | None = None
    version: str | None = None
    x: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    row_ids: list[str] | None = None
    unseen: list[list[str]] | None = None
    """Per row, the input fields the transformer flagged as never seen in training (responses only; None when
    the sender does not say, as older transformers and other loggers do)."""
    source: str | None = None

    @property
    def rows(self) -> int:
        if self.x is not None:
            return len(self.x)
        return 0 if self.probabilities is None else len(self.probabilities)


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def parse_time(value: str | None, default: float) -> float:
    """Seconds since the epoch of an RFC 3339 `ce-time`; `default` when absent."""
    if not value:
        return default
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise InvalidEvent(f"ce-time {value!r} is not an RFC 3339 timestamp", field="ce-time") from e


def load_json(body: bytes, what: str = "body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidEvent(f"{what} is not valid JSON: {e}", field=what) from e


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def parse_cloudevent(headers: Mapping[str, str], body: bytes, received_at: float) -> EventHalf:
    """One CloudEvent (headers lower-cased) into an EventHalf; InvalidEvent on anything malformed."""
    content_type = headers.get("content-type", "")
    if media_type(content_type) == STRUCTURED:
        attributes, payload = _structured(load_json(body))
    else:
        if not is_json(content_type):
            raise UnsupportedMediaType(f"content-type {content_type or '(none)'!r}: inference events must be "
                                       "application/json (binary mode), application/cloudevents+json or "
                                       "application/cloudevents-batch+json")
        # Binary mode: attribute values are percent-encoded in their headers (HTTP binding 3.1.3.2).
        attributes = {k: unquote(v) if k.startswith("ce-") else v for k, v in headers.items()}
        payload = load_json(body)
    return _half(attributes, payload, received_at)


def parse_cloudevent_batch(body: bytes, received_at: float) -> list[tuple[EventHalf, dict[str, Any]]]:
    """A batch-mode body (a JSON array of structured-mode events) into its events, in order: each parsed, and
    its envelope as sent (what the spool keeps, as a structured-mode event). All or nothing: the first event
    that is wrong raises its error with the index in the field (`[2].type`) and the message."""
    events = load_json(body)
    if not isinstance(events, list) or not events:
        raise InvalidEvent("a CloudEvents batch must be a non-empty JSON array of structured-mode events",
                           field="body")
    out = []
    for i, envelope in enumerate(events):
        if not isinstance(envelope, dict):
            raise InvalidEvent(f"batch event [{i}]: not a JSON object (a structured-mode CloudEvent)",
                               field=f"[{i}]")
        try:
            attributes, payload = _structured(envelope)
            out.append((_half(attributes, payload, received_at), envelope))
        except RequestError as e:
            raise in_batch(e, i) from e
    return out


def in_batch(error: RequestError, index: int) -> RequestError:
    """The same error about event `index` of a batch: its field in the batch's terms (structured-mode attribute
    names, the payload under `data`), the index in the message too."""
    field = error.field
    if field is None or field == "body":
        where = f"[{index}].data" if field == "body" else f"[{index}]"
    elif field.startswith("ce-"):
        where = f"[{index}].{field[3:]}"
    elif field in ("data_base64", "datacontenttype", "model"):
        where = f"[{index}].{field}"
    else:
        where = f"[{index}].data.{field}"
    return type(error)(f"batch event [{index}]: {error.message}", field=where)


def _half(attributes: Mapping[str, str], payload: Any, received_at: float) -> EventHalf:
    """An EventHalf from a CloudEvent's attributes (as `ce-*` names) and its decoded data."""
    for name in ("ce-specversion", "ce-id", "ce-type"):
        if not attributes.get(name):
            raise InvalidEvent(f"missing CloudEvent attribute header {name}", field=name)
    if attributes["ce-specversion"] not in SPEC_VERSIONS:
        raise InvalidEvent(f"ce-specversion {attributes['ce-specversion']!r}: expected 1.0", field="ce-specversion")
    ce_type = attributes["ce-type"]
    if ce_type not in EVENT_TYPES:
        raise UnsupportedEventType(f"ce-type {ce_type!r} is not an inference log event; expected one of "
                                   f"{', '.join(EVENT_TYPES)}", field="ce-type")
    family, role = EVENT_TYPES[ce_type]
    if not isinstance(payload, dict):
        raise InvalidEvent("the event data must be a JSON object", field="body")
    half = EventHalf(id=attributes["ce-id"], role=role, family=family,
                     time=parse_time(attributes.get("ce-time"), received_at),
                     model=attributes.get("ce-inferenceservicename") or None, source=attributes.get("ce-source"))
    if role == "request":
        half.x, half.row_ids = request_rows(payload)
        params = payload.get("parameters")
        if isinstance(params, dict) and isinstance(params.get("metadata_version"), str):
            half.version = params["metadata_version"]
    else:
        half.probabilities, ids = response_scores(payload)
        half.row_ids = ids
        half.unseen = response_unseen(payload, len(half.probabilities))
        if isinstance(payload.get("model_name"), str) and payload["model_name"]:
            half.model = payload["model_name"]
        if isinstance(payload.get("model_version"), str) and payload["model_version"]:
            half.version = payload["model_version"]
    if half.row_ids is not None and len(half.row_ids) != half.rows:
        raise InvalidEvent(f"{len(half.row_ids)} row ids for {half.rows} rows", field="transaction_id")
    return half


def _structured(envelope: Any) -> tuple[dict[str, str], Any]:
    """Attributes (as `ce-*` names) and data of a structured-mode event (JSON event format, section 3.1):
    `data` holds JSON data as is, `data_base64` binary data, which must be JSON here too."""
    if not isinstance(envelope, dict):
        raise InvalidEvent("a structured CloudEvent must be a JSON object", field="body")
    attributes = {f"ce-{k}": str(v) for k, v in envelope.items() if k not in ("data", "data_base64")}
    data_type = str(envelope.get("datacontenttype") or "application/json")
    if "data" in envelope and "data_base64" in envelope:
        raise InvalidEvent("a structured CloudEvent has data or data_base64, not both", field="data_base64")
    if not is_json(data_type):
        raise UnsupportedMediaType(f"datacontenttype {data_type!r}: inference event data must be JSON",
                                   field="datacontenttype")
    if "data_base64" not in envelope:
        return attributes, envelope.get("data")
    encoded = envelope["data_base64"]
    try:
        if not isinstance(encoded, str):
            raise ValueError("not a string")
        data = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as e:
        raise InvalidEvent(f"data_base64 is not base64 ({e})", field="data_base64") from e
    return attributes, load_json(data, "data_base64")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def matrix(values: Any, field: str, shape: list[int] | None = None) -> np.ndarray:
    """A 2-D float32 array from nested or flat JSON numbers, checked: finite and within float32's range
    (1e300 is refused here, never turned into an infinity further on)."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidEvent(f"must hold numbers only, with rows of equal length ({e})", field=field) from e
    if array.dtype.kind not in "iuf" and array.size:  # strings, booleans, objects: never coerced
        raise InvalidEvent("must hold numbers only (not strings or booleans, and within float32's range), with rows "
                           "of equal length", field=field)
    array = array.astype(np.float64)
    if shape is not None:
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise InvalidEvent("shape must be a list of non-negative integers", field=field)
        if math.prod(shape) != array.size:
            raise InvalidEvent(f"shape {_clip(shape)} does not match {array.size} values", field=field)
        array = array.reshape(shape)
    if array.ndim == 1:
        array = array.reshape(-1, 1) if shape is not None and len(shape) == 1 else array.reshape(1, -1)
    if array.ndim != 2:
        raise InvalidEvent(f"must be a [rows, columns] matrix, got {array.ndim} dimensions", field=field)
    if array.size == 0:
        raise InvalidEvent("holds no values", field=field)
    if not np.isfinite(array).all():
        raise InvalidEvent("holds NaN or infinite values", field=field)
    if np.abs(array).max() > FLOAT32_MAX:
        raise InvalidEvent(f"holds a value beyond float32's range (+-{FLOAT32_MAX:.3g})", field=field)
    return array.astype(np.float32)


def _clip(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _tensor_ids(tensors: list[Any]) -> list[str] | None:
    for tensor in tensors:
        if isinstance(tensor, dict) and tensor.get("name") in ROW_ID_NAMES:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise InvalidEvent("row id tensor must have a data list", field=str(tensor.get("name")))
            return [str(v) for v in data]
    return None


def _numeric_tensor(tensors: list[Any], preferred: str, field: str) -> dict[str, Any]:
    candidates = [t for t in tensors if isinstance(t, dict) and str(t.get("datatype", "FP32")).upper() != "BYTES"]
    for tensor in candidates:
        if tensor.get("name") == preferred:
            return tensor
    if len(candidates) == 1:
        return candidates[0]
    raise InvalidEvent(f"no numeric tensor named {preferred!r} among {len(candidates)} numeric tensors", field=field)


def request_rows(payload: dict[str, Any]) -> tuple[np.ndarray, list[str] | None]:
    if "inputs" in payload:
        inputs = payload["inputs"]
        if not isinstance(inputs, list) or not inputs:
            raise InvalidEvent("inputs must be a non-empty list of tensors", field="inputs")
        tensor = _numeric_tensor(inputs, "input", "inputs")
        if "data" not in tensor:
            raise InvalidEvent("tensor has no data", field=f"inputs.{tensor.get('name', '?')}")
        x = matrix(tensor["data"], f"inputs.{tensor.get('name', '?')}.data", tensor.get("shape"))
        return x, _tensor_ids(inputs)
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidEvent("instances must be a non-empty list of rows", field="instances")
        if isinstance(instances[0], dict):
            raise InvalidEvent("instances must be lists of model-input numbers in the model's column order",
                               field="instances")
        return matrix(instances, "instances"), None
    if isinstance(payload.get("data"), dict):
        return _seldon(payload["data"], "data"), None
    raise InvalidEvent("request body has none of inputs (V2), instances (V1) or data (Seldon)", field="body")


def response_scores(payload: dict[str, Any]) -> tuple[np.ndarray, list[str] | None]:
    if "outputs" in payload:
        outputs = payload["outputs"]
        if not isinstance(outputs, list) or not outputs:
            raise InvalidEvent("outputs must be a non-empty list of tensors", field="outputs")
        tensor = _numeric_tensor(outputs, "probability", "outputs")
        if "data" not in tensor:
            raise InvalidEvent("tensor has no data", field=f"outputs.{tensor.get('name', '?')}")
        m = matrix(tensor["data"], f"outputs.{tensor.get('name', '?')}.data", tensor.get("shape"))
        return _scores(m, "outputs"), _tensor_ids(outputs)
    if "predictions" in payload:
        predictions = payload["predictions"]
        if not isinstance(predictions, list) or not predictions:
            raise InvalidEvent("predictions must be a non-empty list", field="predictions")
        if isinstance(predictions[0], dict):
            key = "probability" if "probability" in predictions[0] else "score"
            if not all(isinstance(p, dict) for p in predictions):
                raise InvalidEvent("predictions must all be objects or all be numbers", field="predictions")
            values = [p.get(key) for p in predictions]
            for i, v in enumerate(values):
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise InvalidEvent(f"each prediction object needs a numeric {key!r}",
                                       field=f"predictions[{i}].{key}")
            scores = matrix(values, "predictions", [len(values)])[:, 0]
            probabilities_in_range(scores, "predictions")
            ids = [str(p["id"]) for p in predictions] if all("id" in p for p in predictions) else None
            return scores, ids
        m = matrix(predictions, "predictions", [len(predictions)] if not isinstance(predictions[0], list) else None)
        return _scores(m, "predictions"), None
    if isinstance(payload.get("data"), dict):
        return _scores(_seldon(payload["data"], "data"), "data"), None
    raise InvalidEvent("response body has none of outputs (V2), predictions (V1) or data (Seldon)", field="body")


UNSEEN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


def response_unseen(payload: dict[str, Any], rows: int) -> list[list[str]] | None:
    """The transformer's `unseen` flags, one list of field names per row: V1 `predictions[i].unseen`, or a V2
    BYTES output tensor `unseen` whose data holds a list of names (or a comma-separated string) per row.
    None when the response does not carry them (nothing is counted then)."""
    per_row: list[Any] | None = None
    field = "unseen"
    predictions = payload.get("predictions")
    if isinstance(predictions, list) and predictions and all(isinstance(p, dict) for p in predictions):
        if any("unseen" in p for p in predictions):
            per_row, field = [p.get("unseen", []) for p in predictions], "predictions[{i}].unseen"
    for tensor in payload.get("outputs") or []:
        if isinstance(tensor, dict) and tensor.get("name") == "unseen":
            per_row, field = tensor.get("data"), "outputs.unseen.data[{i}]"
            if not isinstance(per_row, list) or len(per_row) != rows:
                raise InvalidEvent(f"the unseen tensor needs one entry per row ({rows})", field="outputs.unseen.data")
    if per_row is None:
        return None
    out = []
    for i, names in enumerate(per_row):
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not isinstance(names, list) or not all(isinstance(n, str) and UNSEEN_NAME.match(n) for n in names):
            raise InvalidEvent("unseen must list input field names (letters, digits, _ and ., at most 64)",
                               field=field.format(i=i))
        out.append(sorted(set(names)))
    return out


def _seldon(data: dict[str, Any], field: str) -> np.ndarray:
    if "ndarray" in data:
        return matrix(data["ndarray"], f"{field}.ndarray")
    tensor = data.get("tensor")
    if isinstance(tensor, dict) and "values" in tensor:
        return matrix(tensor["values"], f"{field}.tensor.values", tensor.get("shape"))
    raise InvalidEvent("Seldon data needs ndarray or tensor.values", field=field)


def probabilities_in_range(p: np.ndarray, field: str) -> None:
    """Refuse scores outside [0, 1]: a probability is what every detector and the label join assume."""
    bad = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))
    if len(bad):
        raise InvalidEvent(f"probabilities must be in [0, 1]; value {float(p[bad[0]])!r} at row {int(bad[0])} is not",
                           field=f"{field}[{int(bad[0])}]")


def _scores(m: np.ndarray, field: str) -> np.ndarray:
    """One score per row: the only column, or column 1 of a two-column predict_proba; each in [0, 1]."""
    if m.shape[1] in (1, 2):
        scores = m[:, m.shape[1] - 1]
        probabilities_in_range(scores, field)
        return scores
    raise InvalidEvent(f"expected one score per row (or two class probabilities), got {m.shape[1]} columns",
                       field=field)
