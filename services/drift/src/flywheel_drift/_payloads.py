"""The service's own JSON bodies: the batch endpoint (many rows at once, no CloudEvent envelope) and the
labels endpoint (delayed ground truth). Pure; errors name the field.

Batch, `POST /v1/batch`:

    {"model": "fraud", "version": "v3", "time": "2026-11-23T12:00:00Z",
     "rows": [[19 model-input numbers], ...], "probabilities": [p, ...], "ids": ["t123", ...]}

`version`, `time`, `probabilities` and `ids` are optional (the version then is FLYWHEEL_DRIFT_ASSUME_VERSION;
time the moment it was accepted; without ids, labels cannot be joined to these rows). Probabilities are
finite numbers in [0, 1]; ids are strings.

Labels, `POST /v1/labels`: `{"labels": [{"id": "t123", "label": 1}, ...]}`; `id` is the row's key
(its transaction id, or `<inference id>` / `<inference id>/<row>` when the event carried no ids), a
non-empty string; `label` is the integer 0 or 1 (not `true`, not `1.0`).

Strict on purpose: a key these bodies do not define (a typo such as `probabilty`), a number where a string
belongs or a string where a number belongs is a 400 naming the field, never silently ignored or coerced
(a numeric id used to be stored as text and then answered `accepted: 0`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import InvalidEvent
from ._events import matrix, parse_time, probabilities_in_range
from ._pairing import Record

BATCH_KEYS = frozenset({"model", "version", "time", "rows", "instances", "probabilities", "ids"})
LABEL_KEYS = frozenset({"id", "label"})


def _known_keys(payload: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in payload if k not in known)
    if unknown:
        name = unknown[0][:40]
        raise InvalidEvent(f"unknown field {name!r}; {where or 'the body'} takes {', '.join(sorted(known))}",
                           field=f"{where}.{name}" if where else name)


def parse_batch(payload: Any, received_at: float, batch_id: str) -> Record:
    if not isinstance(payload, dict):
        raise InvalidEvent("the batch body must be a JSON object", field="body")
    _known_keys(payload, BATCH_KEYS, "")
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
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p):
            raise InvalidEvent("probabilities must be a list of numbers in [0, 1], one per row", field="probabilities")
        probabilities = matrix(p, "probabilities", [len(p)])[:, 0]
        probabilities_in_range(probabilities, "probabilities")
        if len(probabilities) != len(x):
            raise InvalidEvent(f"{len(probabilities)} probabilities for {len(x)} rows", field="probabilities")
    ids = payload.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != len(x):
            raise InvalidEvent(f"ids must be a list of {len(x)} strings, one per row", field="ids")
        for i, key in enumerate(ids):
            if not isinstance(key, str) or not key:
                raise InvalidEvent(f"ids must be non-empty strings; got {type(key).__name__} {_short(key)}",
                                   field=f"ids[{i}]")
        keys = list(ids)
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
    _known_keys(payload, frozenset({"labels"}), "")
    out = []
    for i, item in enumerate(payload["labels"]):
        if not isinstance(item, dict):
            raise InvalidEvent("each label must be an object with id and label", field=f"labels[{i}]")
        _known_keys(item, LABEL_KEYS, f"labels[{i}]")
        key = item.get("id")
        if not isinstance(key, str) or not key:
            raise InvalidEvent(f"id must be a non-empty string (the row's transaction id); got "
                               f"{type(key).__name__} {_short(key)}", field=f"labels[{i}].id")
        value = item.get("label")
        if type(value) is not int or value not in (0, 1):
            raise InvalidEvent(f"label must be the integer 0 or 1; got {type(value).__name__} {_short(value)}",
                               field=f"labels[{i}].label")
        out.append(Label(key, value))
    return out


def _short(value: Any, limit: int = 40) -> str:
    """A caller's value, quoted and cut short, for an answer (never an unbounded echo)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"

