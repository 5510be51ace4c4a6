"""Inference logging: KServe-format CloudEvents posted to a sink, off the request path.

Each scored request yields one record: a request event and a response event sharing `ce-id` (the
inference id the client gets back, so delayed labels can be joined later). They are sent in binary mode
with the headers KServe's own logger (kserve pkg/logger) sets: ce-specversion, ce-id, ce-type
(org.kubeflow.serving.inference.request|response), ce-source, ce-time and the extensions
ce-inferenceservicename, ce-namespace, ce-component, ce-endpoint and ce-metadata, so the drift service
reads KServe's logger and this one alike. One extension is this service's own: `ce-modelversion`, the
version that scored, on both events of a pair, so a consumer can split by version from the headers
alone (the bodies carry it too: the request's `parameters.metadata_version`, the response's
`model_version`).

A request handler only does `put_nowait` on a bounded queue; sender tasks post with a short timeout and
retry a transient failure (no answer, timeout, 408, 429, 5xx) with back-off, so a drift pod restarting
loses nothing: delivery is at least once, and the drift service analyses a `ce-id` once. Nothing here can
slow or fail a prediction.

What a longer sink outage costs, and how it is counted (every event submitted ends in exactly one of
sent, failed, dropped or unsent; `events_submitted_total` is their sum plus what is queued or in flight):

- A record's two events share one retry budget, EVENT_RETRY_S from when a sender takes the record. When it
  is spent on a transient failure, the record is given up whole: the event that failed and any not yet
  posted count in `events_failed_total`, so a sink coming back a moment later is not sent the response
  of a request it never took. Each sender so gives up about one record per EVENT_RETRY_S of outage.
- The other records wait in the queue, oldest first, at most EVENT_QUEUE_SIZE of them (the memory bound);
  a record scored while it is full is dropped whole, `events_dropped_total` +2. Dropping starts about
  EVENT_QUEUE_SIZE / request rate seconds into an outage.
- When the sink is back, the senders' next try (within the 2 s back-off cap) succeeds, the backlog goes out
  oldest first, then new records: records scored while the backlog drains may still find the queue full.
- An event refused for good (a 4xx other than 408/429) is counted failed alone; its partner is still sent.

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
from typing import Any

import httpx

from flywheel_contracts.auth import TokenFile

from ._metrics import Metrics

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
COMPONENT = "transformer"
MODEL_VERSION_ATTRIBUTE = "ce-modelversion"
"""CloudEvent extension attribute (binary-mode header) naming the model version that scored."""

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


def event_headers(attributes: EventAttributes, record: InferenceRecord, ce_type: str) -> dict[str, str]:
    """Binary-mode CloudEvent v1.0 headers, named as KServe's logger names them."""
    stamp = record.time.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": record.inference_id,
        "ce-type": ce_type,
        "ce-source": attributes.source,
        "ce-time": stamp,
        "ce-inferenceservicename": attributes.inference_service,
        "ce-namespace": attributes.namespace,
        "ce-component": attributes.component,
        "ce-endpoint": attributes.endpoint,
        "ce-metadata": "{}",
        "content-type": "application/json",
    }
    if record.model_version is not None:
        headers[MODEL_VERSION_ATTRIBUTE] = record.model_version
    return headers


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
    ) -> None:
        self.url = url
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

    async def _send_forever(self) -> None:
        while True:
            record = await self._queue.get()
            self._in_flight += 2
            try:
                give_up = time.monotonic() + self._retry_s  # one budget for the record, not one per event
                for ce_type, payload in ((REQUEST_TYPE, record.request), (RESPONSE_TYPE, record.response)):
                    expired = await self._post(record, ce_type, payload, give_up)
                    self._in_flight -= 1  # not when cancelled mid-post: that event was not sent
                    if expired and ce_type == REQUEST_TYPE:  # the sink is down: give the response up with it
                        self._failed(f"{expired}; its request event was given up", count=1)
                        self._in_flight -= 1
                        break
            finally:
                self._queue.task_done()
                self._metrics.event_queue.labels(self._model).set(self._queue.qsize())

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
        """One post: (None, _) when the sink took it, else (why, whether trying again may help)."""
        try:
            response = await self._client.post(
                self.url,
                content=body,
                headers={**event_headers(self.attributes, record, ce_type), **self.token.header()},
            )
        except httpx.HTTPError as e:
            return type(e).__name__, not _tls_failure(e)
        if 200 <= response.status_code < 300:
            self._sent += 1
            self._metrics.events_sent.labels(self._model).inc()
            if self._failing:
                self._failing = False
                log.info("event sink %s accepts events again", self.url)
            return None, False
        if response.status_code in (401, 403):
            why = f"HTTP {response.status_code}: check FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE (drift ingest token)"
            return why, False
        return f"HTTP {response.status_code}", response.status_code in (408, 429) or response.status_code >= 500

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
