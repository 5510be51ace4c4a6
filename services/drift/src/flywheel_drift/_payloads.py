"""The service's own JSON bodies: the batch endpoint (many rows at once, no CloudEvent envelope) and the
labels endpoint (delayed ground truth). Pure; errors name the field.

Batch, `POST /v1/batch`:

    {"model": "fraud", "version": "v3", "time": "2026-11-23T12:00:00Z",
     "rows": [[19 model-input numbers], ...], "probabilities": [p, ...], "ids": ["t123", ...]}

`version`, `time`, `probabilities` and `ids` are optional (the version then is FLYWHEEL_DRIFT_ASSUME_VERSION;
time the moment it was accepted; without ids, labels cannot be joined to these rows).

Labels, `POST /v1/labels`: `{"labels": [{"id": "t123", "label": 1}, ...]}`; `id` is the row's key
(its transaction id, or `<inference id>` / `<inference id>/<row>` when the event carried no ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import InvalidEvent
from ._events import matrix, parse_time
from ._pairing import Record


def parse_batch(payload: Any, received_at: float, batch_id: str) -> Record:
    if not isinstance(payload, dict):
        raise InvalidEvent("the batch body must be a JSON object", field="body")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidEvent("model name (string) is required", field="model")
    version = payload.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise InvalidEvent("version must be a string like 'v3'", field="version")
    time = payload.get("time")
    if time is not None and not isinstance(time, str):
        raise InvalidEvent("time must be an RFC 3339 string", field="time")
    rows = payload.get("rows", payload.get("instances"))
    if not isinstance(rows, list) or not rows:
        raise InvalidEvent("rows must be a non-empty list of model-input rows", field="rows")
    x = matrix(rows, "rows")
    probabilities = None
    if payload.get("probabilities") is not None:
        p = payload["probabilities"]
        if not isinstance(p, list):
            raise InvalidEvent("probabilities must be a list with one number per row", field="probabilities")
        probabilities = matrix(p, "probabilities", [len(p)])[:, 0]
        if len(probabilities) != len(x):
            raise InvalidEvent(f"{len(probabilities)} probabilities for {len(x)} rows", field="probabilities")
    ids = payload.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != len(x) or not all(isinstance(i, (str, int)) for i in ids):
            raise InvalidEvent(f"ids must be a list of {len(x)} strings, one per row", field="ids")
        keys = [str(i) for i in ids]
    else:
        keys = [f"{batch_id}/{i}" for i in range(len(x))]
    return Record(inference_id=batch_id, model=model, version=version,
                  time=parse_time(time, received_at) if time else received_at,
                  x=x, probabilities=probabilities, keys=keys)


@dataclass(frozen=True)
class Label:
    key: str
    label: int


def parse_labels(payload: Any) -> list[Label]:
    if isinstance(payload, dict) and "labels" not in payload and "id" in payload:
        payload = {"labels": [payload]}
    if not isinstance(payload, dict) or not isinstance(payload.get("labels"), list) or not payload["labels"]:
        raise InvalidEvent('expected {"labels": [{"id": ..., "label": 0 or 1}, ...]}', field="labels")
    out = []
    for i, item in enumerate(payload["labels"]):
        if not isinstance(item, dict):
            raise InvalidEvent("each label must be an object with id and label", field=f"labels[{i}]")
        key = item.get("id")
        if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key) == "":
            raise InvalidEvent("id must be a non-empty string", field=f"labels[{i}].id")
        value = item.get("label")
        if isinstance(value, bool):
            value = int(value)
        if value not in (0, 1) or isinstance(value, float) and not float(value).is_integer():
            raise InvalidEvent(f"label must be 0 or 1, got {value!r}", field=f"labels[{i}].label")
        out.append(Label(str(key), int(value)))
    return out

