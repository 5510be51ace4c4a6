"""Precomputed drift state: what a model version ships so the drift service is ready at once.

`python -m flywheel_drift precompute --version-dir DIR` reads DIR/drift_reference.parquet and
DIR/metadata.json and writes DIR/drift_state/state.json. The trainer runs it on its staging directory
before publishing, so the file is covered by metadata.json's digests like every other file of the
version (a published version is never modified afterwards).

What it holds: the reference's sha256 (the service refuses state computed for another reference), and
the online detector's threshold for the configured ERT, k and features, checked by simulating the whole
detector (`_online.calibrate_threshold`) when that is affordable (ERT <= SIMULATION_MAX_ERT; the cost
grows with the ERT). Without state the service computes the threshold from Siegmund's approximation,
which takes microseconds and is within a few percent (docs/benchmarks.md, section "Drift detection"), and
says so in its log, /ready and report.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ReferenceUnavailable
from ._online import calibrate_threshold, threshold_for

STATE_DIR = "drift_state"
STATE_FILE = "state.json"
REFERENCE_FILE = "drift_reference.parquet"
FORMAT = 1
SIMULATION_MAX_ERT = 5000.0
GENERATOR = "flywheel-drift 0.1.0"


def online_entry(ert: float, k: float, features: list[str], n_ref: int, simulate: bool,
                 streams: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The online threshold for one configuration; simulated when asked and affordable."""
    base = {"ert": float(ert), "k": float(k), "features": list(features), "n_ref": int(n_ref)}
    if not features:
        return {**base, "h": float("inf"), "method": "none (no online features)"}
    if simulate and ert <= SIMULATION_MAX_ERT:
        calibrated = calibrate_threshold(ert, n_ref, len(features), k, streams=streams, seed=seed)
        return {**base, "h": calibrated["h"], "method": "simulation",
                "simulated_ert": calibrated["simulated_ert"], "streams": int(calibrated["streams"])}
    why = "siegmund approximation" if not simulate else (
        f"siegmund approximation (ERT {ert:g} > {SIMULATION_MAX_ERT:g} is too long to simulate)")
    return {**base, "h": threshold_for(ert, 2 * len(features), k), "method": why}


def compute_state(version_dir: Path, *, ert: float, k: float, online_features: tuple[str, ...],
                  simulate: bool = True, streams: int = 2000) -> dict[str, Any]:
    """The drift state of a version directory (published or staging)."""
    from flywheel_core.feature_pipeline import read_parquet  # only the CLI and the loader need parquet
    from flywheel_core.model_repo import sha256_file

    reference = Path(version_dir) / REFERENCE_FILE
    if not reference.is_file():
        raise ReferenceUnavailable(f"{reference} does not exist: the trainer writes it before publishing")
    frame = read_parquet(reference)
    features = [name for name in online_features if name in frame.columns]
    rows = int(len(frame))
    return {
        "format": FORMAT,
        "generator": GENERATOR,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "reference": {"file": REFERENCE_FILE, "sha256": sha256_file(reference), "rows": rows},
        "online": online_entry(ert, k, features, rows, simulate, streams),
    }


def write_state(version_dir: Path, state: dict[str, Any]) -> Path:
    """Write DIR/drift_state/state.json atomically; returns its path."""
    target_dir = Path(version_dir) / STATE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / STATE_FILE
    tmp = target.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, target)
    return target


def read_state(version_dir: Path, reference_sha256: str) -> dict[str, Any] | None:
    """The shipped state, or None when there is none; refuses state made for another reference."""
    path = Path(version_dir) / STATE_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReferenceUnavailable(f"{path} is not valid JSON ({e.msg}); rerun precompute") from e
    if state.get("format") != FORMAT:
        raise ReferenceUnavailable(f"{path} has format {state.get('format')!r}, this service reads {FORMAT}")
    if state.get("reference", {}).get("sha256") != reference_sha256:
        raise ReferenceUnavailable(f"{path} was computed for another drift_reference.parquet; rerun precompute")
    return state


def online_threshold(state: dict[str, Any] | None, ert: float, k: float, features: list[str],
                     n_ref: int) -> dict[str, Any]:
    """The shipped threshold when it was made for this configuration, else Siegmund's (instant)."""
    shipped = (state or {}).get("online")
    if shipped and shipped.get("features") == features and np.isclose(shipped.get("ert", -1), ert) \
            and np.isclose(shipped.get("k", -1), k) and shipped.get("n_ref") == n_ref:
        return {**shipped, "source": "drift_state"}
    entry = online_entry(ert, k, features, n_ref, simulate=False)
    reason = "no drift_state shipped with the version" if state is None else \
        "drift_state was computed for another ERT, k or feature list"
    return {**entry, "source": f"computed at start-up ({reason})"}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
