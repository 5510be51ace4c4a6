"""One model version under watch: its windows, online detector, results over time and alert decisions.

The monitor is fed rows in the order they were accepted and answers with the alerts to send. Its
mutable part (`MonitorState`) is plain data, so the service checkpoints it and a restart resumes where
it stopped. Alert rule: a detector's evidence opens an episode of category `data` (window tests,
online detector, MMD) or `performance` (delayed labels), and the first evidence of an episode is the
alert. Window evidence is `alert_after_windows` windows in a row with a drifted feature whose PSI is at
least `alert_min_psi` (significant and material); later evidence of the same episode only updates the
report. An episode closes after `alert_after_windows` clean windows in a row (performance: a clean
evaluation), and a new one can alert only once `alert_cooldown_s` has passed since the last alert:
one shift, one alert.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._online import RankCusum
from ._reference import PROBABILITY, Reference, ReferenceView, feature_matrix
from ._results import Alert
from ._window import WindowBuffer, WindowPolicy, evaluate_window, ready_windows

CATEGORIES = ("data", "performance")


@dataclass(frozen=True)
class MonitorPolicy:
    window: WindowPolicy
    alpha: float
    alert_after_windows: int
    alert_min_psi: float
    alert_cooldown_s: float
    history_points: int
    online_k: float
    online_h: float
    online_features: tuple[str, ...]


@dataclass
class MonitorState:
    """Everything about a version that must survive a restart (checkpointed as a whole)."""

    buffer: WindowBuffer = field(default_factory=WindowBuffer)
    rows: int = 0
    windows: int = 0
    consecutive_drift: int = 0
    consecutive_clean: int = 0
    mmd_consecutive: int = 0
    last_time: float | None = None
    last_window: dict[str, Any] | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=500))
    online: RankCusum | None = None
    online_alarms: deque = field(default_factory=lambda: deque(maxlen=100))
    mmd: deque = field(default_factory=lambda: deque(maxlen=200))
    last_mmd_at: float | None = None
    performance: dict[str, Any] | None = None
    performance_history: deque = field(default_factory=lambda: deque(maxlen=500))
    episodes: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {c: {"active": False, "last_alert_at": None} for c in CATEGORIES})
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=100))
    unseen_rows: int = 0
    """Predictions whose response said which inputs were unseen (the share's denominator)."""
    unseen: dict[str, int] = field(default_factory=dict)
    """Per input field, predictions that flagged it unseen; at most MAX_UNSEEN_FIELDS names, the rest `other`."""


MAX_UNSEEN_FIELDS = 64
"""Distinct field names counted per version: they come from the sender, so they must not grow memory."""
OTHER_FIELD = "other"


class VersionMonitor:
    def __init__(self, reference: Reference, policy: MonitorPolicy, state: MonitorState | None = None) -> None:
        self.reference = reference
        self.policy = policy
        self.state = state or MonitorState(history=deque(maxlen=policy.history_points))
        self.last_x: np.ndarray | None = None
        """The last closed window's rows (not checkpointed: only the scheduled MMD test reads them)."""
        self.last_p: np.ndarray | None = None
        self.last_view: ReferenceView | None = None
        names = [n for n in policy.online_features if n in reference.sorted_values]
        if self.state.online is None or self.state.online.features != names:
            self.state.online = RankCusum(names, reference.band_sorted(names), policy.online_k, policy.online_h,
                                          seed=zlib.crc32(f"{reference.model}/{reference.version}".encode()))
        else:  # thresholds and reference columns come from the current version and config, not the checkpoint
            self.state.online.h = policy.online_h
            self.state.online.k = policy.online_k
            self.state.online.ref_sorted = reference.band_sorted(names)

    @property
    def key(self) -> tuple[str, str]:
        return self.reference.model, self.reference.version

    def ingest(self, time: float, x: np.ndarray, probabilities: np.ndarray | None) -> list[Alert]:
        """Add rows accepted at `time`; returns the alerts they raise (usually none)."""
        s = self.state
        s.rows += len(x)
        s.last_time = time if s.last_time is None else max(s.last_time, time)
        alerts: list[Alert] = []
        online = s.online
        # Rows without a probability (a request whose response never came) skip the online detector:
        # its CUSUMs must see every column of every row they count.
        if online is not None and online.features and (probabilities is not None or PROBABILITY not in online.features):
            rows = feature_matrix(self.reference, x, probabilities, online.features)
            for alarm in online.update(rows, self.reference.row_bands(x)):
                record = {"at": time, "feature": alarm.feature, "direction": alarm.direction,
                          "run_length": alarm.row, "statistic": alarm.statistic, "also": alarm.others}
                s.online_alarms.append(record)
                alerts += self._evidence("data", time, "online",
                                         {"online": record, "features": [alarm.feature, *alarm.others]})
        s.buffer.add(time, x, probabilities)
        for opened, wx, wp in ready_windows(s.buffer, time, self.policy.window):
            alerts += self._close_window(opened, time, wx, wp)
        return alerts

    def _close_window(self, opened: float, closed: float, x: np.ndarray, p: np.ndarray) -> list[Alert]:
        s = self.state
        s.windows += 1
        result, view = evaluate_window(self.reference, x, p, self.policy.alpha, s.windows, opened, closed)
        self.last_x, self.last_p, self.last_view = x, p, view
        s.last_window = result
        s.history.append({
            "index": result["index"], "closed_at": closed, "rows": result["rows"], "drift": result["drift"],
            "p_values": {n: f["p_value"] for n, f in result["features"].items()},
            "psi": {n: f["psi"] for n, f in result["features"].items()},
        })
        material = [n for n, f in result["features"].items() if f["drift"] and f["psi"] >= self.policy.alert_min_psi]
        if material:
            s.consecutive_drift += 1
            s.consecutive_clean = 0
        else:
            s.consecutive_drift = 0
            if not result["drift"]:
                s.consecutive_clean += 1
            if s.consecutive_clean >= self.policy.alert_after_windows:
                s.episodes["data"]["active"] = False
        if s.consecutive_drift >= self.policy.alert_after_windows:
            summary = {n: {k: result["features"][n][k] for k in ("p_value", "q_value", "distance", "psi")}
                       for n in material}
            return self._evidence("data", closed, "window", {
                "features": [n for n in result["drifted_features"] if n in material],
                "prediction_drift": "probability" in material,
                "window": {"index": result["index"], "rows": result["rows"], "drifted": summary,
                           "consecutive": s.consecutive_drift}})
        return []

    def count_unseen(self, per_row: list[list[str]]) -> dict[str, int]:
        """Count one response's `unseen` flags; returns the increments by (bounded) field name."""
        s = self.state
        s.unseen_rows += len(per_row)
        added: dict[str, int] = {}
        for names in per_row:
            for name in names:
                if name not in s.unseen and len(s.unseen) >= MAX_UNSEEN_FIELDS:
                    name = OTHER_FIELD
                s.unseen[name] = s.unseen.get(name, 0) + 1
                added[name] = added.get(name, 0) + 1
        return added

    def mmd_due(self, now: float, interval_s: float) -> bool:
        return self.state.last_window is not None and (
            self.state.last_mmd_at is None or now - self.state.last_mmd_at >= interval_s)

    def record_mmd(self, result: dict[str, Any]) -> list[Alert]:
        s = self.state
        s.last_mmd_at = result["at"]
        s.mmd.append(result)
        s.mmd_consecutive = s.mmd_consecutive + 1 if result["drift"] else 0
        if s.mmd_consecutive >= self.policy.alert_after_windows:
            return self._evidence("data", result["at"], "mmd", {"mmd": result, "features": []})
        return []

    def record_performance(self, result: dict[str, Any], now: float) -> list[Alert]:
        s = self.state
        s.performance = {**result, "at": now}
        s.performance_history.append({k: result.get(k) for k in ("roc_auc", "pr_auc", "ece", "coverage", "rows")}
                                     | {"at": now})
        if result["status"] == "degraded":
            return self._evidence("performance", now, "performance", {"performance": result, "features": []})
        if result["status"] == "ok":
            s.episodes["performance"]["active"] = False
        return []

    def _evidence(self, category: str, now: float, detector: str, details: dict[str, Any]) -> list[Alert]:
        episode = self.state.episodes[category]
        if episode["active"]:
            return []
        last = episode["last_alert_at"]
        if last is not None and now - last < self.policy.alert_cooldown_s:
            return []
        episode["active"] = True
        episode["last_alert_at"] = now
        alert = Alert.model_validate({"model": self.reference.model, "version": self.reference.version,
                                      "category": category, "detector": detector, "at": now, **details})
        self.state.alerts.append(alert)
        return [alert]
