"""Inference logging: KServe-format CloudEvents posted to a sink, off the request path.

Each scored request yields one record: a request event and a response event sharing `ce-id` (the
inference id the client gets back, so delayed labels can be joined later). They carry the attributes KServe's
own logger (kserve pkg/logger) sets: specversion, id, type (org.kubeflow.serving.inference.request|response),
source, time and the extensions inferenceservicename, namespace, component, endpoint and metadata, so the
drift service reads KServe's logger and this one alike. One extension is this service's own: `modelversion`,
the version that scored, on both events of a pair, so a consumer can split by version from the attributes
alone (the bodies carry it too: the request's `parameters.metadata_version`, the response's `model_version`).

Two ways to post them (EVENT_MODE):

- `batch` (the default): a sender takes what is queued, up to EVENT_BATCH_MAX records, and waits up to
  EVENT_BATCH_LINGER_S for more while the batch is not full (the log is off the request path, so the wait
  delays only the drift service's view, never an answer), and posts both events of each as one CloudEvents
  batch-mode request
  (`application/cloudevents-batch+json`, a JSON array of structured-mode events). One HTTP request per batch
  instead of two per scored request is most of what the inference log costs here and at the drift service.
- `binary`: each event alone in binary mode with KServe logger's `ce-*` headers (two requests per record),
  for sinks that read only that: KServe's own logger sinks and most other receivers.

A request handler only does `put_nowait` on a bounded queue; sender tasks post with a short timeout and
retry a transient failure (no answer, timeout, 408, 429, 5xx) with back-off, so a drift pod restarting
loses nothing: delivery is at least once, and the drift service analyses a `ce-id` (of each type) once.
Nothing here can slow or fail a prediction.

What a longer sink outage costs, and how it is counted (every event submitted ends in exactly one of
sent, failed, dropped or unsent; `events_submitted_total` is their sum plus what is queued or in flight):

- A record's two events share one retry budget, EVENT_RETRY_S from when a sender takes the record (in batch
  mode every record of a batch is taken at once, and the batch is retried whole). When it is spent on a
  transient failure, the record is given up whole: the event that failed and any not yet posted count in
  `events_failed_total`, so a sink coming back a moment later is not sent the response of a request it never
  took. Each sender so gives up about one record (batch mode: one batch) per EVENT_RETRY_S of outage.
- The other records wait in the queue, oldest first, at most EVENT_QUEUE_SIZE of them; with the records the
  senders hold (one each in binary mode, up to EVENT_BATCH_MAX each in batch mode) that is the memory bound.
  A record scored while the queue is full is dropped whole, `events_dropped_total` +2. Dropping starts about
  EVENT_QUEUE_SIZE / request rate seconds into an outage.
- When the sink is back, the senders' next try (within the 2 s back-off cap) succeeds, the backlog goes out
  oldest first, then new records: records scored while the backlog drains may still find the queue full.
- Binary mode: an event refused for good (a 4xx other than 408/429) is counted failed alone; its partner is
  still sent. Batch mode: the sink refuses a batch whole (the drift service keeps none of a batch with one bad
  event), so a refused batch counts all its events failed; except a 413 (too large for the sink's body limit),
  which splits the batch in halves, each sent on its own, down to a single record.

At shutdown (`close`) the queue is drained for at most a deadline (EVENT_DRAIN_TIMEOUT_S): Kubernetes
sends SIGTERM and kills the pod terminationGracePeriodSeconds later, so waiting longer than that loses
the records anyway. Whatever is still queued or in flight at the deadline is counted, not sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import httpx

from flywheel_contracts.auth import TokenFile

from ._batching import take
from ._metrics import Metrics

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
COMPONENT = "transformer"
MODEL_VERSION_ATTRIBUTE = "ce-modelversion"
"""CloudEvent extension attribute (binary-mode header) naming the model version that scored."""
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
EventMode = Literal["batch", "binary"]

log = logging.getLogger("flywheel_transformer.events")


RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
"""Back-off between tries of one event: 0.1 s, doubling, at most 2 s."""


@dataclass(frozen=True)
class EventAttributes:
    """The CloudEvent attributes that are the same for every event of this process."""

    source: str
    namespace: str
    inference_service: str
    endpoint: str
    component: str = COMPONENT


@dataclass(frozen=True)
class InferenceRecord:
    """One scored request: its V2-shaped request and response payloads."""

    inference_id: str
    time: datetime
    request: dict[str, Any]
    response: dict[str, Any]
    model_version: str | None = None
    """The version that scored (a well-formed `vN`), or None when the predictor did not say."""


def event_attributes(attributes: EventAttributes, record: InferenceRecord, ce_type: str) -> dict[str, str]:
    """The CloudEvent v1.0 context attributes of one event, as structured mode names them (no `ce-` prefix)."""
    stamp = record.time.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    out = {
        "specversion": "1.0",
        "id": record.inference_id,
        "type": ce_type,
        "source": attributes.source,
        "time": stamp,
        "inferenceservicename": attributes.inference_service,
        "namespace": attributes.namespace,
        "component": attributes.component,
        "endpoint": attributes.endpoint,
        "metadata": "{}",
    }
    if record.model_version is not None:
        out[MODEL_VERSION_ATTRIBUTE.removeprefix("ce-")] = record.model_version
    return out


def event_headers(attributes: EventAttributes, record: InferenceRecord, ce_type: str) -> dict[str, str]:
    """Binary-mode CloudEvent v1.0 headers, named as KServe's logger names them."""
    headers = {f"ce-{name}": value for name, value in event_attributes(attributes, record, ce_type).items()}
    headers["content-type"] = "application/json"
    return headers


def batch_body(attributes: EventAttributes, records: list[InferenceRecord]) -> bytes:
    """A CloudEvents batch-mode body (HTTP binding 3.3): both events of each record, in order, as structured-mode
    events with JSON `data`."""
    events = []
    for record in records:
        for ce_type, payload in ((REQUEST_TYPE, record.request), (RESPONSE_TYPE, record.response)):
            events.append({**event_attributes(attributes, record, ce_type), "datacontenttype": "application/json",
                           "data": payload})
    return json.dumps(events, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DrainReport:
    """What the shutdown drain did, in events (two per record)."""

    sent: int
    """Events the sink accepted while draining."""
    failed: int
    """Events the sink refused or did not take in time while draining."""
    unsent: int
    """Events still queued or in flight when the deadline passed: never posted, or their post abandoned."""
    seconds: float


class EventSink:
    """A bounded queue of inference records and the tasks that post them."""

    def __init__(
        self,
        url: str,
        attributes: EventAttributes,
        metrics: Metrics,
        model: str,
        queue_size: int,
        timeout_s: float,
        senders: int = 2,
        retry_s: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: TokenFile | None = None,
        verify: ssl.SSLContext | bool = True,
        mode: EventMode = "batch",
        batch_max: int = 64,
        linger_s: float = 0.0,
    ) -> None:
        self.url = url
        self.mode = mode
        self._batch_max = batch_max if mode == "batch" else 1
        self._linger_s = linger_s if mode == "batch" else 0.0
        self.token = token or TokenFile(None)
        """The drift ingest token sent with every event (re-read when its file changes); none when unset."""
        self.attributes = attributes
        self._metrics = metrics
        self._model = model
        self._queue: asyncio.Queue[InferenceRecord] = asyncio.Queue(maxsize=queue_size)
        self._senders = senders
        self._tasks: list[asyncio.Task[None]] = []
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport, verify=verify)
        self._retry_s = retry_s
        self._failing = False
        self._in_flight = 0
        """Events taken off the queue by a sender and not yet posted (or failed)."""
        self._sent = 0
        self._failed_count = 0

    def submit(self, record: InferenceRecord) -> bool:
        """Queue a record without waiting; False (and counted) when the queue is full."""
        self._start()
        self._metrics.events_submitted.labels(self._model).inc(2)
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._metrics.events_dropped.labels(self._model).inc(2)
            return False
        finally:
            self._metrics.event_queue.labels(self._model).set(self._queue.qsize())
        return True

    def _start(self) -> None:
        # Started on first use, inside the server's running event loop.
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._send_forever()) for _ in range(self._senders)]

    def _taken(self) -> None:
        self._in_flight += 2  # a record is two events (request and response) in flight from leaving the queue

    async def _send_forever(self) -> None:
        while True:
            records = await take(self._queue, self._batch_max, self._linger_s, self._taken)
            try:
                give_up = time.monotonic() + self._retry_s  # one budget for the record, not one per event
                if self.mode == "batch":
                    await self._post_batch(records, give_up)
                else:
                    await self._post_record(records[0], give_up)
            finally:
                for _ in records:
                    self._queue.task_done()
                self._metrics.event_queue.labels(self._model).set(self._queue.qsize())

    async def _post_record(self, record: InferenceRecord, give_up: float) -> None:
        """Binary mode: the request event, then the response event; the response is given up with the request."""
        for ce_type, payload in ((REQUEST_TYPE, record.request), (RESPONSE_TYPE, record.response)):
            expired = await self._post(record, ce_type, payload, give_up)
            self._in_flight -= 1  # not when cancelled mid-post: that event was not sent
            if expired and ce_type == REQUEST_TYPE:  # the sink is down: give the response up with it
                self._failed(f"{expired}; its request event was given up", count=1)
                self._in_flight -= 1
                return

    async def _post_batch(self, records: list[InferenceRecord], give_up: float) -> None:
        """Batch mode: both events of every record in one post, retried whole on a transient failure until the
        monotonic time `give_up`; a 413 splits it in halves. Every event ends sent or failed (counted)."""
        events = 2 * len(records)
        body = batch_body(self.attributes, records)
        backoff = RETRY_FIRST_S
        while True:
            why, transient, status = await self._send(body, {"content-type": BATCH_CONTENT_TYPE}, events)
            if why is None:
                self._in_flight -= events  # not when cancelled mid-post: those events were not sent
                return
            if status == 413 and len(records) > 1:  # over the sink's body limit: smaller batches fit
                half = len(records) // 2
                await self._post_batch(records[:half], give_up)
                await self._post_batch(records[half:], give_up)
                return
            if not transient or time.monotonic() + backoff > give_up:
                self._failed(f"{why} (a batch of {events} events)", count=events)
                self._in_flight -= events
                return
            self._metrics.events_retried.labels(self._model).inc()
            self._outage(why)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    async def _post(self, record: InferenceRecord, ce_type: str, payload: dict[str, Any], give_up: float) -> str | None:
        """Post one event, retrying a transient failure with back-off until the monotonic time `give_up`. Returns
        why, when it was given up on a transient failure (the retry budget spent); None when it was sent or
        refused for good (counted failed)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        backoff = RETRY_FIRST_S
        while True:
            why, transient = await self._try(record, ce_type, body)
            if why is None:
                return None
            if not transient:
                self._failed(why)
                return None
            if time.monotonic() + backoff > give_up:
                self._failed(why)
                return why
            self._metrics.events_retried.labels(self._model).inc()
            self._outage(why)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    async def _try(self, record: InferenceRecord, ce_type: str, body: bytes) -> tuple[str | None, bool]:
        """One binary-mode post: (None, _) when the sink took it, else (why, whether trying again may help)."""
        why, transient, _ = await self._send(body, event_headers(self.attributes, record, ce_type), 1)
        return why, transient

    async def _send(self, body: bytes, headers: dict[str, str], events: int) -> tuple[str | None, bool, int | None]:
        """One post of `events` events: (None, _, status) when the sink took them (counted sent), else (why,
        whether trying again may help, the HTTP status when there was an answer)."""
        try:
            response = await self._client.post(self.url, content=body, headers={**headers, **self.token.header()})
        except httpx.HTTPError as e:
            return type(e).__name__, not _tls_failure(e), None
        status = response.status_code
        if 200 <= status < 300:
            self._sent += events
            self._metrics.events_sent.labels(self._model).inc(events)
            if self._failing:
                self._failing = False
                log.info("event sink %s accepts events again", self.url)
            return None, False, status
        if status in (401, 403):
            why = f"HTTP {status}: check FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE (drift ingest token)"
            return why, False, status
        return f"HTTP {status}", status in (408, 429) or status >= 500, status

    def _outage(self, why: str) -> None:
        if not self._failing:  # one line per outage, not per event; the counters have the rest
            self._failing = True
            log.warning("event sink %s is failing (%s); retrying each record for up to %.0f s", self.url, why,
                        self._retry_s)

    def _failed(self, why: str, count: int = 1) -> None:
        self._failed_count += count
        self._metrics.events_failed.labels(self._model).inc(count)
        if not self._failing:  # one line per outage, not per event; the counter has the rest
            self._failing = True
            log.warning(
                "event sink %s is failing (%s); counting events given up in flywheel_transformer_events_failed_total",
                self.url,
                why,
            )

    async def drain(self) -> None:
        """Wait until every queued record has been posted (or failed)."""
        if self._tasks:
            await self._queue.join()

    async def close(self, deadline_s: float) -> DrainReport:
        """Drain the queue for at most `deadline_s`, then stop the senders and close the HTTP client; what
        was neither sent nor failed by then is counted in `events_unsent_total`."""
        started = time.monotonic()
        sent, failed = self._sent, self._failed_count
        try:
            await asyncio.wait_for(self.drain(), timeout=deadline_s)
        except asyncio.TimeoutError:
            pass
        await self.aclose()
        unsent = 2 * self._queue.qsize() + self._in_flight
        if unsent:
            self._metrics.events_unsent.labels(self._model).inc(unsent)
        return DrainReport(
            sent=self._sent - sent,
            failed=self._failed_count - failed,
            unsent=unsent,
            seconds=time.monotonic() - started,
        )

    async def aclose(self) -> None:
        """Stop the senders now (what they hold stays counted as in flight) and close the HTTP client."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._client.aclose()


def _tls_failure(error: BaseException) -> bool:
    """Whether a failed post failed the TLS handshake (a certificate the CA did not sign, a wrong name): a
    configuration fault that trying again will not mend."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
