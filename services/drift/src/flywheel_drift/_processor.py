"""The analysis thread: accepted events in, monitors updated, predictions logged, alerts out.

Only this thread touches the monitors, so they need no locks. It takes, in order: events committed by
the spool (or replayed from it on start), MMD results, and requests to evaluate performance. Every
CHECKPOINT_INTERVAL_S it writes the monitors and the half-paired events into the spool's checkpoint
(`_checkpoint`: versioned JSON, never pickle), which lets the spool drop what the checkpoint covers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from . import _checkpoint
from ._backlog import Backlog
from ._config import Settings
from ._errors import ReferenceUnavailable, RequestError
from ._events import parse_cloudevent
from ._labels import LabelStore
from ._metrics import Metrics
from ._monitor import MonitorPolicy, MonitorState, VersionMonitor
from ._pairing import Pairer, Record
from ._payloads import parse_batch
from ._performance import PerformanceLimits, evaluate
from ._repo import ReferenceLoader
from ._report import version_reports
from ._results import Alert, Detector
from ._skew import SkewStore
from ._spool import Spool, SpooledEvent
from ._window import WindowPolicy

EVENT_GROUP = 256
"""Most queued inference events analysed under one commit of the label store."""

log = logging.getLogger("flywheel_drift.processor")
PERFORMANCE_INTERVAL_S = 30.0
ORPHAN_TTL_S = 14 * 86400.0


def parse_spooled(event: SpooledEvent) -> Any:
    """Re-read a replayed event exactly as the request handler read it."""
    if event.kind == "batch":
        return parse_batch(orjson.loads(event.body), event.received_at, f"batch-{event.seq}")
    return parse_cloudevent(orjson.loads(event.headers), event.body, event.received_at)


class Processor:
    def __init__(self, settings: Settings, loader: ReferenceLoader, labels: LabelStore, spool: Spool,
                 metrics: Metrics, backlog: Backlog, send_alert: Any, submit_mmd: Any,
                 skew: SkewStore | None = None) -> None:
        self.s = settings
        self.loader = loader
        self.labels = labels
        self.spool = spool
        self.metrics = metrics
        self.backlog = backlog
        self.send_alert = send_alert
        self.submit_mmd = submit_mmd
        self.skew = skew
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.monitors: OrderedDict[tuple[str, str], VersionMonitor] = OrderedDict()
        """Least recently used first; at most MAX_TRACKED_VERSIONS (only published versions get one)."""
        self.restored: dict[tuple[str, str], MonitorState] = {}
        self.pairer = Pairer(settings.max_pending_halves, settings.pair_timeout_s)
        self.last_seq = 0
        self.dirty_performance: set[tuple[str, str]] = set()
        self.limits = PerformanceLimits(settings.min_labels, settings.min_positives, settings.roc_auc_drop,
                                        settings.pr_auc_drop, settings.ece_rise)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_checkpoint = time.monotonic()
        self._last_performance = 0.0
        self._unpaired_seen = 0
        self.labels_waiting = labels.orphans > 0
        self.lock = threading.Lock()
        """Held while an item is analysed (tests hold it to stall the analysis)."""
        self.published: tuple[float, dict[tuple[str, str], dict[str, Any]]] = (time.time(), {})
        """(when, every monitored version's report): what `GET /v1/report` serves, replaced whole (one
        reference assignment), so a reader never waits for the analysis nor sees half an update."""
        self._report_dirty = True
        self._last_report = 0.0

    # ---- start-up -------------------------------------------------------------------------------
    def restore(self, on_replayed: Callable[[SpooledEvent], None] | None = None) -> int:
        """Load the checkpoint and replay the spool after it (each event also to `on_replayed`); returns the
        number of events replayed."""
        saved = self.spool.load_checkpoint()
        if saved is not None:
            self.last_seq, blob = saved
            try:
                checkpoint = _checkpoint.loads(blob)
            except _checkpoint.CheckpointUnreadable as e:  # another format, an old pickle, damage
                self.metrics.unreadable_checkpoints.inc()
                log.warning("%s; windows and detectors start afresh (unreadable_checkpoints_total), events after "
                            "it are still replayed", e)
            else:
                self.restored = dict(checkpoint.monitors)
                for half in checkpoint.pending:
                    self.pairer.pending[(half.id, half.role)] = half
        replayed = 0
        for event in self.spool.replay(self.last_seq):
            try:
                event.parsed = parse_spooled(event)
            except RequestError as e:  # cannot happen for what was accepted, unless the code changed
                log.warning("spooled event %d cannot be read any more (%s); skipped", event.seq, e)
                self.last_seq = event.seq
                continue
            if on_replayed is not None:
                on_replayed(event)
            try:
                self._handle_event(event)
            except Exception:  # as in the loop: one event must not keep the service from starting
                log.exception("replay of spooled event %d failed; skipped", event.seq)
                self.last_seq = event.seq
            replayed += 1
        return replayed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drift-processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.checkpoint()

    # ---- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                kind, item = self.queue.get(timeout=0.5)
            except queue.Empty:
                kind, item = "tick", None
            if kind != "event":
                self._guarded(kind, item)
                continue
            # Inference events queued together are analysed under one commit of the label store (_labels.grouped);
            # whatever else follows them waits for that commit.
            events, after = [item], None
            while len(events) < EVENT_GROUP:
                try:
                    following = self.queue.get_nowait()
                except queue.Empty:
                    break
                if following[0] != "event":
                    after = following
                    break
                events.append(following[1])
            analysed = 0
            try:
                with self.lock, self.labels.grouped():
                    for event in events:
                        analysed += 1
                        self._analyse("event", event, periodic=False)
            except Exception:  # the label store itself failed (closed at shutdown, disk full): as for one event
                log.exception("analysis of %d queued events failed", len(events))
                for event in events[analysed:]:  # never analysed: no longer waiting either
                    self.backlog.release(_rows(event.parsed), len(event.body))
            self._guarded("tick", None)
            if after is not None:
                self._guarded(*after)

    def _guarded(self, kind: str, item: Any) -> None:
        with self.lock:
            self._analyse(kind, item)

    def _analyse(self, kind: str, item: Any, periodic: bool = True) -> None:
        try:
            self._dispatch(kind, item, periodic)
        except Exception:  # the analysis must outlive one bad event; the log says which
            log.exception("analysis of a %s item failed", kind)

    def _dispatch(self, kind: str, item: Any, periodic: bool = True) -> None:
        if kind == "event":
            try:
                self._handle_event(item)
            finally:  # an event that failed analysis is no longer waiting either
                self.backlog.release(_rows(item.parsed), len(item.body))
        elif kind == "mmd":
            self._apply_mmd(*item)
        elif kind == "labels":
            self.dirty_performance.update(item)
            self.labels_waiting = True
        elif kind == "sync":
            if self.dirty_performance or self.labels_waiting:
                self.evaluate_performance()
            self.publish_report()
            item.set()
        if kind != "tick":
            self._report_dirty = True
        if periodic:  # not inside a group: its checks write to the label store in transactions of their own
            self.metrics.backlog_rows.set(self.backlog.snapshot().rows)
            self._periodic()

    def publish_report(self) -> None:
        """Build every monitored version's report now and publish it (the analysis thread, or before start)."""
        self.published = (time.time(), version_reports(self.monitors, self.labels.totals))
        self._report_dirty = False
        self._last_report = time.monotonic()

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_performance >= PERFORMANCE_INTERVAL_S and (self.dirty_performance or self.labels_waiting):
            self._last_performance = now
            self.evaluate_performance()
        if now - self._last_checkpoint >= self.s.checkpoint_interval_s:
            self.checkpoint()
        if self._report_dirty and now - self._last_report >= self.s.report_interval_s:
            self.publish_report()

    def _handle_event(self, event: SpooledEvent) -> None:
        started = time.perf_counter()
        parsed = event.parsed
        if isinstance(parsed, Record):
            records = [parsed]
        else:
            records = self.pairer.add(parsed) + self.pairer.expire(parsed.time)
        if self.pairer.unpaired > self._unpaired_seen:
            self.metrics.unpaired.inc(self.pairer.unpaired - self._unpaired_seen)
            self._unpaired_seen = self.pairer.unpaired
        for record in records:
            self._process(record)
        self.last_seq = max(self.last_seq, event.seq)
        self.metrics.process_seconds.observe(time.perf_counter() - started)

    def _process(self, record: Record) -> None:
        model = record.model or self.s.models[0]
        version = self.loader.resolve(model, record.version)
        if version is None:
            self.metrics.without_version.labels(model).inc(record.rows)
            return
        if not self.loader.is_published(model, version):
            # Any string may arrive as a version (intake refuses them; a spool written before may hold
            # some): only published ones become metric labels or keys of stored predictions.
            self.metrics.without_reference.labels(model, "unpublished").inc(record.rows)
            return
        self.labels.add_predictions(model, version, record.keys, record.probabilities, record.time)
        monitor = self.monitor(model, version)
        if monitor is not None and record.unseen is not None:
            for name, n in monitor.count_unseen(record.unseen).items():
                self.metrics.unseen_inputs.labels(model, version, name).inc(n)
        if record.x is None:
            return
        if monitor is None or record.x.shape[1] != len(monitor.reference.columns):
            self.metrics.without_reference.labels(model, version).inc(record.rows)
            return
        if self.skew is not None:
            self.skew.add(model, version, record.keys, record.time, record.x)
        windows_before = monitor.state.windows
        alerts = monitor.ingest(record.time, record.x, record.probabilities)
        self.metrics.rows.labels(model, version).inc(record.rows)
        for name, value in monitor.state.online.statistics().items() if monitor.state.online else ():
            self.metrics.online_statistic.labels(model, version, name).set(value)
        if monitor.state.windows != windows_before and monitor.state.last_window is not None:
            result = monitor.state.last_window
            self.metrics.window(model, version, result)
            self.metrics.drift.labels(model, version).set(1.0 if result["drift"] else 0.0)
            if self.s.mmd_enabled and monitor.mmd_due(record.time, self.s.mmd_interval_s):
                monitor.state.last_mmd_at = record.time
                self.submit_mmd(monitor.reference, monitor.last_view, monitor.last_x, monitor.last_p, record.time)
        self._raise(alerts)

    def monitor(self, model: str, version: str) -> VersionMonitor | None:
        key = (model, version)
        if key in self.monitors:
            self.monitors.move_to_end(key)
            return self.monitors[key]
        try:
            reference = self.loader.load(model, version)
        except ReferenceUnavailable:
            return None
        policy = MonitorPolicy(
            window=WindowPolicy(self.s.window_rows, self.s.window_seconds, self.s.min_window_rows),
            alpha=self.s.alpha, alert_after_windows=self.s.alert_after_windows, alert_min_psi=self.s.alert_min_psi,
            alert_cooldown_s=self.s.alert_cooldown_s, history_points=self.s.history_points,
            online_k=self.s.online_k, online_h=float(reference.state["online"]["h"]),
            online_features=tuple(reference.state["online"]["features"]))
        monitor = VersionMonitor(reference, policy, self.restored.pop(key, None))
        self.monitors[key] = monitor
        while len(self.monitors) > self.s.max_tracked_versions:
            (old_model, old_version), _ = self.monitors.popitem(last=False)
            self.metrics.evicted_versions.inc()
            log.info("%s/%s: analysis state forgotten (least recently used of more than "
                     "FLYWHEEL_DRIFT_MAX_TRACKED_VERSIONS=%d)", old_model, old_version, self.s.max_tracked_versions)
        return monitor

    def _raise(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.metrics.alerts.labels(alert.model, alert.version).inc()
            if alert.detector is Detector.ONLINE:
                self.metrics.online_alarms.labels(alert.model, alert.version).inc()
            self.metrics.drift.labels(alert.model, alert.version).set(1.0)
            log.warning("drift alert %s/%s: %s detector, features %s", alert.model, alert.version,
                        alert.detector.value, ", ".join(alert.features) or "-")
            self.send_alert(alert)

    def _apply_mmd(self, key: tuple[str, str], result: dict[str, Any]) -> None:
        monitor = self.monitors.get(key)
        if monitor is None:
            return
        if result["p_value"] is not None:  # None: too few rows to test (`_mmd.MIN_ROWS`)
            self.metrics.mmd_p_value.labels(*key).set(result["p_value"])
        self.metrics.mmd_seconds.observe(result["seconds"])
        self._raise(monitor.record_mmd(result))

    def evaluate_performance(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.dirty_performance |= self.labels.reconcile(now, ORPHAN_TTL_S)
        self.labels_waiting = self.labels.orphans > 0  # look again later: their predictions may still come
        for key in sorted(self.dirty_performance):
            monitor = self.monitor(*key)
            if monitor is None:
                continue
            y, p = self.labels.recent_labelled(key[0], key[1], self.s.label_window)
            predictions, labelled = self.labels.totals(*key)
            limits = self.limits
            if monitor.reference.baseline.get("ece_bins"):
                limits = PerformanceLimits(**{**limits.__dict__, "ece_bins": monitor.reference.baseline["ece_bins"]})
            result = evaluate(y, p, monitor.reference.baseline, limits, predictions, labelled)
            self.metrics.performance(key[0], key[1], result)
            self._raise(monitor.record_performance(result, now))
        self.dirty_performance.clear()

    def checkpoint(self) -> None:
        self._last_checkpoint = time.monotonic()
        states = self.restored | {key: m.state for key, m in self.monitors.items()}
        states = dict(list(states.items())[-self.s.max_tracked_versions:])  # the most recently used
        blob = _checkpoint.dumps(_checkpoint.Checkpoint(self.last_seq, states, list(self.pairer.pending.values()),
                                                        time.time()))
        self.spool.save_checkpoint(self.last_seq, blob, time.time())
        self.labels.enforce_retention(self.s.prediction_store_rows)

    def sync(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is analysed (tests, benchmarks)."""
        done = threading.Event()
        self.queue.put(("sync", done))
        return done.wait(timeout_s)


def _rows(parsed: Any) -> int:
    return int(parsed.rows) if parsed is not None else 0
