"""The checkpoint's file format: the analysis state (every monitor's windows, online detector, MMD and
performance results, alert episodes, and the half-paired events) as versioned, typed JSON.

Not pickle: a checkpoint is a file on a volume, and unpickling a tampered one runs its code; a renamed
class also made pickle drop the state silently. This format holds only JSON values and numpy arrays
written as dtype (from a short allow-list), shape and base64 bytes, and every object is rebuilt
field by field, so reading one can do nothing but fail.

`format_version` says which layout this is. A checkpoint this code cannot read (another format version,
a pickle from before this format, anything malformed) raises `CheckpointUnreadable`; the processor then
starts the analysis afresh, logs it once and counts it (`unreadable_checkpoints_total`), and still
replays the events after the checkpoint's sequence number (the spool keeps that number beside the blob).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import DriftError
from ._events import EventHalf
from ._monitor import MonitorState
from ._online import RankCusum
from ._results import Alert
from ._window import WindowBuffer

FORMAT = "flywheel-drift-checkpoint"
FORMAT_VERSION = 1
DTYPES = ("float32", "float64", "int64", "bool")
"""The only array types a checkpoint may hold."""


class CheckpointUnreadable(DriftError):
    """This code cannot read the checkpoint; the analysis starts afresh (events after it are replayed)."""


@dataclass
class Checkpoint:
    seq: int
    monitors: dict[tuple[str, str], MonitorState]
    pending: list[EventHalf]
    saved_at: float


# ---- writing --------------------------------------------------------------------------------------------

def dumps(checkpoint: Checkpoint) -> bytes:
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seq": int(checkpoint.seq),
        "saved_at": float(checkpoint.saved_at),
        "monitors": [{"model": model, "version": version, "state": _state(state)}
                     for (model, version), state in checkpoint.monitors.items()],
        "pending": [_half(half) for half in checkpoint.pending],
    }
    return json.dumps(document, default=_plain, separators=(",", ":")).encode()


def _array(value: np.ndarray | None) -> dict[str, Any] | None:
    if value is None:
        return None
    value = np.ascontiguousarray(value)
    if value.dtype.name not in DTYPES:
        raise TypeError(f"checkpoint arrays are {', '.join(DTYPES)}; got {value.dtype}")
    return {"dtype": value.dtype.name, "shape": list(value.shape), "data": base64.b64encode(value.tobytes()).decode()}


def _deque(items: deque) -> dict[str, Any]:
    return {"maxlen": items.maxlen, "items": list(items)}


def _state(state: MonitorState) -> dict[str, Any]:
    buffer = state.buffer
    return {
        "buffer": {"opened_at": buffer.opened_at, "rows": buffer.rows,
                   "x": _array(np.concatenate(buffer.chunks)) if buffer.chunks else None,
                   "p": _array(np.concatenate(buffer.probs)) if buffer.probs else None},
        "rows": state.rows, "windows": state.windows, "consecutive_drift": state.consecutive_drift,
        "consecutive_clean": state.consecutive_clean, "mmd_consecutive": state.mmd_consecutive,
        "last_time": state.last_time, "last_window": state.last_window, "history": _deque(state.history),
        "online": _online(state.online) if state.online is not None else None,
        "online_alarms": _deque(state.online_alarms), "mmd": _deque(state.mmd), "last_mmd_at": state.last_mmd_at,
        "performance": state.performance, "performance_history": _deque(state.performance_history),
        "episodes": state.episodes,
        "alerts": {"maxlen": state.alerts.maxlen, "items": [alert.to_json() for alert in state.alerts]},
        "unseen_rows": state.unseen_rows, "unseen": state.unseen,
    }


def _online(cusum: RankCusum) -> dict[str, Any]:
    # The reference columns are not state: they come back from the model repository on restore.
    return {"features": list(cusum.features), "k": cusum.k, "h": cusum.h, "seed": cusum.seed,
            "s_pos": _array(cusum.s_pos), "s_neg": _array(cusum.s_neg), "run_length": cusum.run_length,
            "rows_seen": cusum.rows_seen, "rng": cusum.rng.bit_generator.state}


def _half(half: EventHalf) -> dict[str, Any]:
    return {"id": half.id, "role": half.role, "family": half.family, "time": half.time, "model": half.model,
            "version": half.version, "x": _array(half.x), "probabilities": _array(half.probabilities),
            "row_ids": half.row_ids, "unseen": half.unseen, "source": half.source}


def _plain(value: Any) -> Any:
    """numpy scalars inside free-form results (window results, performance) as JSON numbers."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot go into a checkpoint")


# ---- reading --------------------------------------------------------------------------------------------

def loads(blob: bytes) -> Checkpoint:
    """The checkpoint in `blob`; CheckpointUnreadable when this code cannot read it (never executes it)."""
    if blob[:1] == b"\x80":
        raise CheckpointUnreadable("the checkpoint is a pickle (written before checkpoint format_version 1); "
                                   "pickles are never loaded")
    try:
        document = json.loads(blob)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointUnreadable(f"the checkpoint is not JSON ({e})") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointUnreadable(f"the checkpoint is not a {FORMAT} document")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointUnreadable(f"the checkpoint has format_version {version!r}; this service reads "
                                   f"{FORMAT_VERSION}")
    try:
        monitors = {(str(m["model"]), str(m["version"])): _read_state(m["state"]) for m in document["monitors"]}
        pending = [_read_half(h) for h in document["pending"]]
        return Checkpoint(int(document["seq"]), monitors, pending, float(document["saved_at"]))
    except CheckpointUnreadable:
        raise
    except Exception as e:  # any malformed field: the whole checkpoint is unusable, never half of it
        raise CheckpointUnreadable(f"the checkpoint is malformed ({type(e).__name__}: {e})") from e


def _read_array(value: dict[str, Any] | None) -> np.ndarray | None:
    if value is None:
        return None
    if value["dtype"] not in DTYPES:
        raise CheckpointUnreadable(f"array dtype {value['dtype']!r} is not one of {', '.join(DTYPES)}")
    data = np.frombuffer(base64.b64decode(value["data"], validate=True), dtype=value["dtype"])
    return data.reshape([int(n) for n in value["shape"]]).copy()


def _read_deque(value: dict[str, Any]) -> deque:
    return deque(value["items"], maxlen=value["maxlen"])


def _read_state(value: dict[str, Any]) -> MonitorState:
    b = value["buffer"]
    x, p = _read_array(b["x"]), _read_array(b["p"])
    buffer = WindowBuffer(opened_at=b["opened_at"], chunks=[] if x is None else [x],
                          probs=[] if p is None else [p], rows=int(b["rows"]))
    alerts = value["alerts"]
    return MonitorState(
        buffer=buffer, rows=int(value["rows"]), windows=int(value["windows"]),
        consecutive_drift=int(value["consecutive_drift"]), consecutive_clean=int(value["consecutive_clean"]),
        mmd_consecutive=int(value["mmd_consecutive"]), last_time=value["last_time"],
        last_window=value["last_window"], history=_read_deque(value["history"]),
        online=_read_online(value["online"]) if value["online"] is not None else None,
        online_alarms=_read_deque(value["online_alarms"]), mmd=_read_deque(value["mmd"]),
        last_mmd_at=value["last_mmd_at"], performance=value["performance"],
        performance_history=_read_deque(value["performance_history"]), episodes=value["episodes"],
        alerts=deque((Alert.model_validate(a) for a in alerts["items"]), maxlen=alerts["maxlen"]),
        # added within format_version 1: a checkpoint written before has none
        unseen_rows=int(value.get("unseen_rows", 0)),
        unseen={str(k): int(v) for k, v in (value.get("unseen") or {}).items()},
    )


def _read_required_array(value: dict[str, Any] | None) -> np.ndarray:
    array = _read_array(value)
    if array is None:
        raise CheckpointUnreadable("an array the detector state needs is null")
    return array


def _read_online(value: dict[str, Any]) -> RankCusum:
    cusum = RankCusum([str(f) for f in value["features"]], [], float(value["k"]), float(value["h"]),
                      seed=int(value["seed"]))
    cusum.s_pos, cusum.s_neg = _read_required_array(value["s_pos"]), _read_required_array(value["s_neg"])
    cusum.run_length, cusum.rows_seen = int(value["run_length"]), int(value["rows_seen"])
    rng = value["rng"]
    if rng.get("bit_generator") != "PCG64":
        raise CheckpointUnreadable(f"online detector random state of {rng.get('bit_generator')!r}; expected PCG64")
    cusum.rng.bit_generator.state = rng
    return cusum


def _read_half(value: dict[str, Any]) -> EventHalf:
    return EventHalf(id=str(value["id"]), role=str(value["role"]), family=str(value["family"]),
                     time=float(value["time"]), model=value["model"], version=value["version"],
                     x=_read_array(value["x"]), probabilities=_read_array(value["probabilities"]),
                     row_ids=value["row_ids"], unseen=value.get("unseen"), source=value.get("source"))
