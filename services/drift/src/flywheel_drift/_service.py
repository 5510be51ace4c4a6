"""The drift service: accept (validate, persist, hand over), analyse in the background, report.

Accepting is the only work on a sender's path: the body is read and checked (a malformed event gets a
4xx naming the problem), the backlog rule is applied (429 rather than unbounded memory), and the event
is committed to the spool; the 202 comes after the commit. Everything else happens in the processor
thread. A version the caller names must be published in the model repository: a batch naming another
gets a 404; a CloudEvent naming another is counted and dropped with a 202 (its senders are loggers that
cannot change the version and would only log or retry a 4xx), so invented versions leave no state.
A CloudEvent delivered again (same source, id and type: a sender's retry) within the dedup horizon is
acknowledged with a 202 `duplicate: true` and counted, not persisted or analysed again (`_dedup`).
A batch of CloudEvents (batch mode) is one request and one admission decision for all its events, which go
through the same steps as single events: one malformed event (or one for a model not monitored here) refuses
the whole batch with a 4xx naming its index, before anything is kept; the backlog admits all its events or none
(429); each event is then deduplicated, and spooled as the structured-mode event it was, so a restart replays
it as any other; the 202 comes once all are committed. A batch the spool refuses in part answers 503 and the
events it did keep are deduplicated when the sender retries the batch.
Start-up restores the last checkpoint and replays the spool before the service reports ready. Reading the
report never waits for the analysis: it serves what the analysis thread last published, with its age.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from flywheel_contracts.skew import SkewResult

from ._alerts import AlertSender
from ._backlog import Backlog
from ._config import Settings
from ._dedup import RecentIds
from ._errors import (
    Backlogged,
    InvalidEvent,
    InvalidRequest,
    NotReady,
    ReferenceUnavailable,
    RequestError,
    UnknownModel,
    UnknownVersion,
)
from ._events import STRUCTURED, EventHalf, in_batch, load_json, parse_cloudevent, parse_cloudevent_batch
from ._labels import LabelStore
from ._metrics import Metrics
from ._mmd import MMDRunner
from ._payloads import parse_batch, parse_labels
from ._processor import Processor
from ._repo import ReferenceLoader
from ._report import service_report
from ._skew import SkewStore
from ._spool import Spool, SpooledEvent

log = logging.getLogger("flywheel_drift")

# Only these CloudEvent headers are kept in the spool: what parsing needs, nothing sensitive.
KEPT_HEADERS = ("content-type", "ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time",
                "ce-inferenceservicename", "ce-namespace", "ce-component", "ce-endpoint", "ce-modelid",
                "ce-requestid")
STRUCTURED_HEADERS = orjson.dumps({"content-type": STRUCTURED})
"""What the spool keeps as the headers of an event that came in a batch: its body is the structured-mode event."""


class DriftService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 alert_transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.loader = ReferenceLoader(settings)
        self.backlog = Backlog(settings.max_backlog_rows, settings.max_backlog_bytes)
        self.ready = False
        self.started_at = time.time()
        self.ready_after_s: float | None = None
        self.replayed = 0
        self._alert_transport = alert_transport
        self.recent = RecentIds(settings.dedup_events, settings.dedup_seconds)
        self.skew = SkewStore(settings.skew_sample_rows, settings.max_tracked_versions)
        self.processor: Processor
        self.spool: Spool
        self.labels: LabelStore
        self.alerts: AlertSender
        self.mmd: MMDRunner | None = None

    # ---- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the stores, restore and replay, load the latest references; then ready."""
        started = time.perf_counter()
        s = self.settings
        self.labels = LabelStore(s.spool_dir, s.durable)
        self.spool = Spool(s.spool_dir, s.durable, on_committed=self._committed)
        self.alerts = AlertSender(s.alert_cloudevent_sinks, s.alert_webhook_sinks, s.alert_timeout_s,
                                  s.alert_retries, self.metrics, self._alert_transport)
        if s.mmd_enabled:
            self.mmd = MMDRunner(s.mmd_rows, s.mmd_permutations, s.alpha,
                                 on_result=lambda key, result: self.processor.queue.put(("mmd", (key, result))))
        self.processor = Processor(s, self.loader, self.labels, self.spool, self.metrics, self.backlog,
                                   send_alert=self.alerts.send, submit_mmd=self._submit_mmd, skew=self.skew)
        replay_started = time.perf_counter()
        self.replayed = self.processor.restore(on_replayed=self._remember)
        self.metrics.replay_seconds.set(time.perf_counter() - replay_started)
        for model in s.models:
            version = self.loader.latest(model)
            if version is not None and self.processor.monitor(model, version) is None:
                log.warning("%s/%s: %s", model, version, self.loader.failure(model, version))
        self.processor.publish_report()
        self.processor.start()
        self.ready = True
        self.metrics.ready.set(1)
        self.ready_after_s = time.perf_counter() - started
        log.info("drift service ready in %.2fs (replayed %d events)", self.ready_after_s, self.replayed)

    def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        self.processor.stop()
        self.spool.close()
        self.alerts.close()
        if self.mmd is not None:
            self.mmd.stop()
        self.labels.close()

    def _submit_mmd(self, reference: Any, view: Any, x: Any, p: Any, at: float) -> None:
        if self.mmd is not None:
            self.mmd.submit(reference, view, x, p, at)

    def _remember(self, event: SpooledEvent) -> None:
        """A replayed CloudEvent is marked as seen, so a retry that arrives after a restart is still one."""
        if isinstance(event.parsed, EventHalf):
            self.recent.check_and_mark(_dedup_key(event.parsed), event.received_at)

    def _committed(self, event: SpooledEvent) -> None:
        self.processor.queue.put(("event", event))

    # ---- accepting ------------------------------------------------------------------------------
    def _admit(self, rows: int, size: int) -> None:
        """Reserve room in the backlog for an event (released by the processor once analysed)."""
        if not self.ready:
            raise NotReady("the drift service is still replaying its spool; retry in a few seconds")
        if not self.backlog.try_reserve(rows, size):
            self.metrics.throttled.inc()
            b, s = self.backlog.snapshot(), self.settings
            raise Backlogged(f"{b.rows} rows ({b.bytes} bytes) are waiting for analysis, over "
                             f"FLYWHEEL_DRIFT_MAX_BACKLOG_ROWS={s.max_backlog_rows} or _BYTES={s.max_backlog_bytes}; "
                             "retry after a second")

    def _model(self, name: str | None) -> str:
        model = name or self.settings.models[0]
        if model not in self.settings.models:
            raise UnknownModel(f"model {model!r} is not monitored here; FLYWHEEL_DRIFT_MODELS is "
                               f"{','.join(self.settings.models)}", field="model")
        return model

    def _published(self, model: str, version: str | None) -> bool:
        return version is None or self.loader.is_published(model, version)

    def _check_width(self, model: str, version: str | None, width: int, field: str) -> None:
        version = self.loader.resolve(model, version)
        if version is None:
            return
        try:
            reference = self.loader.load(model, version)
        except ReferenceUnavailable:
            return  # analysed as "without reference" and counted; the event itself is fine
        if width != len(reference.columns):
            raise InvalidEvent(f"rows have {width} values; {model} {version} takes {len(reference.columns)} "
                               "(metadata.json input.columns)", field=field)

    def _vet(self, half: EventHalf) -> tuple[str, bool]:
        """An event's monitored model, and whether its version is published (an unpublished one is counted here
        and dropped by the caller); raises when the model is unknown or its rows have the wrong width."""
        model = self._model(half.model)
        if not self._published(model, half.version):
            self.metrics.without_reference.labels(model, "unpublished").inc(half.rows)
            return model, False
        if half.x is not None:
            self._check_width(model, half.version, half.x.shape[1], "inputs")
        return model, True

    async def _persist(self, event: SpooledEvent, rows: int) -> int:
        """Commit an admitted event; its backlog reservation is released here if the spool refuses it."""
        try:
            return await asyncio.wrap_future(self.spool.append(event))
        except Exception as e:
            self.backlog.release(rows, len(event.body))
            raise NotReady(f"the event could not be persisted ({type(e).__name__}: {e}); retry") from e

    async def accept_cloudevent(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        received = time.time()
        half: EventHalf = parse_cloudevent(headers, body, received)
        model, published = self._vet(half)
        if not published:
            return {"accepted": 0, "id": half.id, "dropped": half.rows,
                    "reason": f"version {_shown(half.version)} of {model} is not published in the model repository"}
        key = _dedup_key(half)
        if self.recent.check_and_mark(key, received):  # checked and marked in one step of the event loop
            self.metrics.duplicate_events.inc()
            return {"accepted": 0, "id": half.id, "duplicate": True}
        try:
            self._admit(half.rows, len(body))
            kept = {k: headers[k] for k in KEPT_HEADERS if k in headers}
            event = SpooledEvent("ce", received, orjson.dumps(kept), body, parsed=half)
            seq = await self._persist(event, half.rows)
        except Exception:
            self.recent.forget(key)  # not kept: the sender's retry must be accepted
            raise
        self.metrics.events.labels(model).inc()
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        return {"accepted": half.rows, "id": half.id, "seq": seq}

    async def accept_cloudevent_batch(self, body: bytes) -> dict[str, Any]:
        """A batch-mode body: every event checked first (all or nothing), then admitted together, deduplicated
        and spooled one by one as structured-mode events."""
        started = time.perf_counter()
        received = time.time()
        checked: list[tuple[EventHalf, str, bytes]] = []
        dropped = 0
        for i, (half, envelope) in enumerate(parse_cloudevent_batch(body, received)):
            try:
                model, published = self._vet(half)
            except RequestError as e:
                raise in_batch(e, i) from e
            if not published:
                dropped += half.rows
                continue
            checked.append((half, model, orjson.dumps(envelope)))
        fresh: list[tuple[EventHalf, str, bytes]] = []
        for half, model, stored in checked:
            if self.recent.check_and_mark(_dedup_key(half), received):  # one step of the event loop, as above
                self.metrics.duplicate_events.inc()
            else:
                fresh.append((half, model, stored))
        reserved = 0
        try:
            for half, _, stored in fresh:
                self._admit(half.rows, len(stored))
                reserved += 1
        except Exception:
            for half, _, stored in fresh[:reserved]:
                self.backlog.release(half.rows, len(stored))
            for half, _, _ in fresh:
                self.recent.forget(_dedup_key(half))  # not kept: the sender's retry must be accepted
            raise
        futures = [asyncio.wrap_future(self.spool.append(SpooledEvent("ce", received, STRUCTURED_HEADERS, stored,
                                                                      parsed=half)))
                   for half, _, stored in fresh]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        seq, refused = 0, None
        for (half, model, stored), outcome in zip(fresh, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.backlog.release(half.rows, len(stored))
                self.recent.forget(_dedup_key(half))
                refused = outcome
            else:
                seq = max(seq, outcome)
                self.metrics.events.labels(model).inc()
        if refused is not None:
            raise NotReady(f"events of the batch could not be persisted ({type(refused).__name__}: {refused}); "
                           "retry the batch (the events kept are not analysed twice)") from refused
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        answer: dict[str, Any] = {"accepted": sum(half.rows for half, _, _ in fresh), "events": len(fresh),
                                  "duplicates": len(checked) - len(fresh), "dropped": dropped}
        if fresh:
            answer["seq"] = seq
        return answer

    async def accept_batch(self, body: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        received = time.time()
        batch_id = f"batch-{uuid.uuid4().hex}"
        record = parse_batch(load_json(body), received, batch_id)
        model = self._model(record.model)
        if not self._published(model, record.version):
            published = self.loader.published(model)
            raise UnknownVersion(f"version {_shown(record.version)} of {model} is not published in the model "
                                 f"repository (latest: {published[-1] if published else 'none'}); name a published "
                                 "version or leave version out to use FLYWHEEL_DRIFT_ASSUME_VERSION", field="version")
        self._check_width(model, record.version, record.x.shape[1], "rows")  # type: ignore[union-attr]
        self._admit(record.rows, len(body))
        event = SpooledEvent("batch", received, orjson.dumps({"batch-id": batch_id}), body, parsed=record)
        seq = await self._persist(event, record.rows)
        self.metrics.batches.labels(model).inc()
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        return {"accepted": record.rows, "id": batch_id, "seq": seq}

    async def accept_labels(self, body: bytes) -> dict[str, Any]:
        if not self.ready:
            raise NotReady("the drift service is still starting; retry in a few seconds")
        labels = parse_labels(load_json(body))
        result = await asyncio.to_thread(self.labels.add_labels, labels, time.time(), self.settings.max_orphan_labels)
        versions = result.pop("versions")
        self.metrics.evicted_orphans.inc(result.pop("evicted"))
        for (model, version), n in versions.items():
            self.metrics.labels.labels(model, version).inc(n)
        self.metrics.duplicate_labels.inc(result["duplicates"])
        self.metrics.conflicting_labels.inc(len(result["conflicts"]))
        self.metrics.unmatched_labels.inc(result["unmatched"])
        if versions or result["unmatched"]:
            self.processor.queue.put(("labels", set(versions)))
        return result

    # ---- training-serving skew (flywheel_contracts.skew) ----------------------------------------
    def _skew_version(self, model: str | None, version: str | None) -> tuple[str, str, list[str]]:
        """A monitored model and a published version with a reference, and its input columns."""
        model = self._model(model)
        if not version:
            raise InvalidRequest("version is required: the skew check compares one version's served rows",
                                 field="version")
        if not self.loader.is_published(model, version):
            raise UnknownVersion(f"{model} {_shown(version)} is not a published version", field="version")
        try:
            return model, version, self.loader.load(model, version).columns
        except ReferenceUnavailable as e:
            raise UnknownVersion(f"{model} {_shown(version)} has no usable reference: {e}", field="version") from e

    def skew_sample(self, model: str | None, version: str | None, limit: str | None) -> dict[str, Any]:
        """`GET /v1/skew/sample`: up to `limit` (default and most: SKEW_SAMPLE_ROWS) served rows of a version."""
        if not self.ready:
            raise NotReady("the drift service is still starting; retry in a few seconds")
        model, version, columns = self._skew_version(model, version)
        most = self.settings.skew_sample_rows
        try:
            n = most if limit is None else int(limit)
        except ValueError:
            raise InvalidRequest(f"limit must be an integer, got {_shown(limit)}", field="limit") from None
        if not 1 <= n <= max(most, 1):
            raise InvalidRequest(f"limit must be 1 to {max(most, 1)} (FLYWHEEL_DRIFT_SKEW_SAMPLE_ROWS)", field="limit")
        return self.skew.sample(model, version, columns, n).model_dump(mode="json")

    def accept_skew(self, body: bytes) -> dict[str, Any]:
        """`POST /v1/skew`: one check's result, kept as the version's latest (report and metrics)."""
        if not self.ready:
            raise NotReady("the drift service is still starting; retry in a few seconds")
        try:
            result = SkewResult.model_validate_json(body)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None
        model, version, columns = self._skew_version(result.model, result.version)
        unknown = sorted(set(result.features) - set(columns))
        if unknown:
            raise InvalidRequest(f"features {', '.join(_shown(n) for n in unknown[:3])} are not input columns of "
                               f"{model} {version}", field="features")
        self.skew.record(result)
        self.metrics.skew(result)
        if result.mismatched_features:
            log.warning("skew %s/%s: %d of %d served rows differ from training's join in %s", model, version,
                        max(f.mismatched for f in result.features.values()), result.rows,
                        ", ".join(result.mismatched_features[:5]))
        return {"accepted": True, "rows": result.rows, "mismatched_features": result.mismatched_features}

    # ---- reading --------------------------------------------------------------------------------
    def report(self, model: str | None = None, version: str | None = None) -> dict[str, Any]:
        if not self.ready:
            raise NotReady("the drift service is still starting; the report is available once /ready says so")
        s, backlog = self.settings, self.backlog.snapshot()
        status = {
            "ready": self.ready,
            "ready_after_s": self.ready_after_s,
            "replayed_events": self.replayed,
            "backlog": {"rows": backlog.rows, "bytes": backlog.bytes},
            "mmd": self.mmd.status if self.mmd is not None else "disabled",
            "settings": {"window_rows": s.window_rows, "window_seconds": s.window_seconds, "alpha": s.alpha,
                         "alert_after_windows": s.alert_after_windows, "alert_min_psi": s.alert_min_psi,
                         "alert_cooldown_s": s.alert_cooldown_s},
        }
        computed_at, versions = self.processor.published  # never the processor's lock: no waiting for ingestion
        status["computed_at"] = computed_at
        status["age_seconds"] = max(0.0, time.time() - computed_at)
        versions = {key: {**v, "skew": _skew_json(self.skew.result(*key))} for key, v in versions.items()}
        return service_report(versions, status, model, version)

    def sync(self, timeout_s: float = 60.0) -> bool:
        """Block until everything accepted so far is analysed (tests and benchmarks)."""
        return self.processor.sync(timeout_s)


def _skew_json(result: SkewResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return result.model_dump(mode="json")


def _dedup_key(half: EventHalf) -> tuple[str, str, str]:
    return half.source or "", half.id, f"{half.family}.{half.role}"


def _shown(value: str | None, limit: int = 40) -> str:
    """A caller's string, quoted and cut short, for an answer (never an unbounded echo)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
