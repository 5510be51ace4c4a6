"""Delivering alerts to the configured sinks (the rollout controller and the trainer subscribe).

Each alert goes to every CloudEvent sink as a binary-mode CloudEvent of type
`io.flywheel.serving.inference.drift` (ce-subject `<model>/<version>`, extensions
`ce-inferenceservicename` and `ce-modelversion`) and to every webhook sink as the same JSON object in a
plain POST (`Alert.to_json()`, documented in the README). Delivery runs in its own thread with retries
and exponential backoff; an alert that still fails is counted and stays visible in the report.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import httpx

from ._metrics import Metrics
from ._results import Alert

ALERT_TYPE = "io.flywheel.serving.inference.drift"
SOURCE = "urn:flywheel:drift"

log = logging.getLogger("flywheel_drift.alerts")


def alert_headers(alert: Alert) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": alert.id,
        "ce-type": ALERT_TYPE,
        "ce-source": SOURCE,
        "ce-time": alert.time,
        "ce-subject": f"{alert.model}/{alert.version}",
        "ce-inferenceservicename": alert.model,
        "ce-modelversion": alert.version,
        "content-type": "application/json",
    }


class AlertSender:
    def __init__(self, cloudevent_sinks: tuple[str, ...], webhook_sinks: tuple[str, ...], timeout_s: float,
                 retries: int, metrics: Metrics, transport: httpx.BaseTransport | None = None) -> None:
        self.sinks = [(url, "cloudevent") for url in cloudevent_sinks] + [(url, "webhook") for url in webhook_sinks]
        self.retries = retries
        self.metrics = metrics
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="drift-alerts", daemon=True)
        self._thread.start()
        self.delivered: list[str] = []

    def send(self, alert: Alert) -> None:
        """Queue an alert for delivery (never blocks the analysis)."""
        if not self.sinks:
            return
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.metrics.alerts_failed.inc(len(self.sinks))

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                body = json.dumps(alert.to_json()).encode()
                for url, mode in self.sinks:
                    self._deliver(url, mode, alert, body)
            finally:
                self._queue.task_done()

    def _deliver(self, url: str, mode: str, alert: Alert, body: bytes) -> None:
        headers = alert_headers(alert) if mode == "cloudevent" else {"content-type": "application/json"}
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post(url, content=body, headers=headers)
                if response.status_code < 300:
                    self.metrics.alerts_delivered.inc()
                    self.delivered.append(url)
                    return
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as e:
                why = type(e).__name__
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        self.metrics.alerts_failed.inc()
        log.warning("alert for %s/%s could not be delivered to %s (%s) after %d tries", alert.model,
                    alert.version, url, why, self.retries + 1)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued alerts are delivered or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._client.close()
