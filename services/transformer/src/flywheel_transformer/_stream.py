"""The feature stream: each scored transaction goes to the features service's stream step, off the request path.

The online card_activity features must move with live traffic, or the model is served a card's state as of the
last materialization while it was trained on the state just before each transaction. The features service computes
the card's new row and pushes it into Feast (its `POST /stream/transactions`, features write token); this module
is how scored transactions reach it, copying the pattern of the inference log (_events): a request handler only
does `put_nowait` on a bounded queue; one sender task takes what is queued, and what arrives within
FEATURE_STREAM_LINGER_S (up to BATCH transactions), and posts it with a short timeout, never retrying. The linger
is the staleness it adds: a scored transaction is in its card's online features within the linger and one post,
and several transactions share the post (and the stream step's work). One sender, so a card's transactions arrive
in the order they were scored. A full queue drops the transaction and counts it; a refused or timed-out post is
counted too. Nothing here can slow or fail a prediction. At shutdown the queue is drained for at most a deadline,
like the inference log's.

A dropped or failed transaction is missing from its card's windows until it leaves them (at most 30 days for
amount_mean_30d); the counters say how often.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import httpx
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from flywheel_contracts.auth import TokenFile

from ._batching import take
from ._validation import Transaction

PATH = "/stream/transactions"
BATCH = 200
"""Most transactions in one post (the features service takes up to 1000)."""

log = logging.getLogger("flywheel_transformer.stream")


class StreamMetrics:
    """Counters of the feature stream (a registry of their own in tests); `of` gives one set per registry."""

    _made: dict[int, StreamMetrics] = {}  # noqa: RUF012 (one set per registry, for the process)

    @classmethod
    def of(cls, registry: CollectorRegistry = REGISTRY) -> StreamMetrics:
        if id(registry) not in cls._made:
            cls._made[id(registry)] = cls(registry)
        return cls._made[id(registry)]

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        prefix = "flywheel_transformer_feature_stream_"
        self.sent = Counter(prefix + "sent_total", "Scored transactions the features stream step accepted.",
                            ("model",), registry=registry)
        self.dropped = Counter(prefix + "dropped_total", "Scored transactions not streamed: queue full.",
                               ("model",), registry=registry)
        self.failed = Counter(prefix + "failed_total",
                              "Scored transactions the stream step refused or did not take in time (not retried).",
                              ("model",), registry=registry)
        self.unsent = Counter(prefix + "unsent_total",
                              "Scored transactions still queued when the shutdown drain deadline passed.",
                              ("model",), registry=registry)
        self.queue = Gauge(prefix + "queue_transactions", "Scored transactions waiting for the stream step.",
                           ("model",), registry=registry)


def stream_body(transactions: Sequence[Transaction]) -> dict[str, Any]:
    """What the stream step needs of each transaction."""
    return {"transactions": [
        {"transaction_id": t.transaction_id, "card_id": t.card_id, "merchant_id": t.merchant_id, "amount": t.amount,
         "country": t.country, "event_timestamp": t.event_timestamp.isoformat()}
        for t in transactions
    ]}


class FeatureStream:
    """A bounded queue of scored transactions and the task that posts them to the stream step."""

    def __init__(
        self,
        base_url: str,
        metrics: StreamMetrics,
        model: str,
        queue_size: int,
        timeout_s: float,
        linger_s: float = 0.0,
        token: TokenFile | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = base_url.rstrip("/") + PATH
        self.token = token or TokenFile(None)
        """The features write token (re-read when its file changes); none when unset."""
        self._metrics = metrics
        self._model = model
        self._queue: asyncio.Queue[Transaction] = asyncio.Queue(maxsize=queue_size)
        self._linger_s = linger_s
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport, verify=verify)
        self._failing = False
        self._in_flight = 0

    def submit(self, transactions: Sequence[Transaction]) -> int:
        """Queue scored transactions without waiting; returns how many were dropped (and counted)."""
        if self._task is None:  # started on first use, inside the server's running event loop
            self._task = asyncio.get_running_loop().create_task(self._send_forever())
        dropped = 0
        for transaction in transactions:
            try:
                self._queue.put_nowait(transaction)
            except asyncio.QueueFull:
                dropped += 1
        if dropped:
            self._metrics.dropped.labels(self._model).inc(dropped)
        self._metrics.queue.labels(self._model).set(self._queue.qsize())
        return dropped

    async def _send_forever(self) -> None:
        while True:
            batch = await take(self._queue, BATCH, self._linger_s, self._taken)
            try:
                await self._post(batch)
                self._in_flight = 0  # not when cancelled mid-post: those were not sent
            finally:
                for _ in batch:
                    self._queue.task_done()
                self._metrics.queue.labels(self._model).set(self._queue.qsize())

    def _taken(self) -> None:
        self._in_flight += 1

    async def _post(self, batch: list[Transaction]) -> None:
        try:
            response = await self._client.post(self.url, json=stream_body(batch), headers=self.token.header())
        except httpx.HTTPError as e:
            self._failed(len(batch), type(e).__name__)
            return
        if 200 <= response.status_code < 300:
            self._metrics.sent.labels(self._model).inc(len(batch))
            if self._failing:
                self._failing = False
                log.info("feature stream %s accepts transactions again", self.url)
        elif response.status_code in (401, 403):
            hint = "check FLYWHEEL_TRANSFORMER_FEATURE_STREAM_TOKEN_FILE (features write token)"
            self._failed(len(batch), f"HTTP {response.status_code}: {hint}")
        else:
            self._failed(len(batch), f"HTTP {response.status_code}")

    def _failed(self, n: int, why: str) -> None:
        self._metrics.failed.labels(self._model).inc(n)
        if not self._failing:  # one line per outage; the counter has the rest
            self._failing = True
            log.warning("feature stream %s is failing (%s); counting in "
                        "flywheel_transformer_feature_stream_failed_total", self.url, why)

    async def drain(self) -> None:
        """Wait until every queued transaction has been posted (or failed)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self, deadline_s: float) -> int:
        """Drain for at most `deadline_s`, then stop; returns (and counts) the transactions left unsent."""
        try:
            await asyncio.wait_for(self.drain(), timeout=deadline_s)
        except TimeoutError:
            pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._client.aclose()
        unsent = self._queue.qsize() + self._in_flight
        if unsent:
            self._metrics.unsent.labels(self._model).inc(unsent)
        return unsent
