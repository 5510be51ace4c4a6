"""A drift outage longer than the retry window, against the real transformer process.

The sink answers every post 503 (a drift pod restarting behind a proxy) for longer than EVENT_RETRY_S (1 s here):
long enough that the transformer gives records up and fills its queue of EVENT_QUEUE_SIZE (4) records. What must
hold meanwhile and after:

- predictions keep being answered 200, none waiting for the event path;
- the queue never holds more than EVENT_QUEUE_SIZE records; a record scored while it is full is dropped;
- every event is accounted for exactly in the transformer's own metrics: each of the
  `flywheel_transformer_events_submitted_total` (two per scored request) ends accepted by the sink
  (`..._events_sent_total`), given up once its record's retry budget is spent (`..._events_failed_total`) or
  dropped with a full queue (`..._events_dropped_total`);
- once the sink is back, the queued backlog reaches it, then new records.

The outage lasts until the transformer's counters show records given up and dropped, not for a fixed time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess

RETRY_S = 1.0
QUEUE = 4
SUBMITTED, SENT, FAILED, DROPPED, QUEUED = (
    f"flywheel_transformer_{name}"
    for name in (
        "events_submitted_total", "events_sent_total", "events_failed_total", "events_dropped_total",
        "event_queue_records",
    )
)
MAX_OUTAGE_PREDICTIONS = 2000
"""A bound on the outage loop (it ends when the counters show records given up and dropped), not its length."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    workdir: Path = tmp_path_factory.mktemp("event-outage")
    publish_version(workdir / "model_repo")
    with FeatureServerStub() as features, PredictorStub() as predictor, CloudEventSink() as sink:
        env = {
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
            "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
            "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
            "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
            "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
            "FLYWHEEL_TRANSFORMER_EVENT_RETRY_S": str(RETRY_S),
            "FLYWHEEL_TRANSFORMER_EVENT_QUEUE_SIZE": str(QUEUE),
            "FLYWHEEL_TRANSFORMER_EVENT_SENDERS": "1",
        }
        with TransformerProcess(env, workdir / "transformer.log") as transformer:
            yield transformer, sink


def counters(transformer: TransformerProcess) -> dict[str, float]:
    return {name: transformer.metric(name) for name in (SUBMITTED, SENT, FAILED, DROPPED, QUEUED)}


def settled(transformer: TransformerProcess, timeout_s: float = 30) -> dict[str, float]:
    """The event counters once nothing is queued or in flight: every submitted event sent, failed or dropped."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = counters(transformer)
        if counts[QUEUED] == 0 and counts[SENT] + counts[FAILED] + counts[DROPPED] == counts[SUBMITTED]:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"events still queued or in flight after {timeout_s} s: {counts}")
        time.sleep(0.05)


def score(transformer: TransformerProcess, transaction_id: str) -> tuple[str, float]:
    """Score one transaction: its inference id (the CloudEvents' ce-id) and the seconds the answer took."""
    started = time.monotonic()
    response = transformer.predict([transaction(transaction_id=transaction_id)])
    assert response.status_code == 200, response.text
    return response.json()["inference_id"], time.monotonic() - started


def test_a_sink_outage_longer_than_the_retry_window_is_counted_exactly_and_recovers(stack) -> None:
    transformer, sink = stack
    warm_up, _ = score(transformer, "warm-up")
    settled(transformer)
    assert [e["headers"]["ce-id"] for e in sink.events] == [warm_up, warm_up]

    sink.down = True
    outage, took, most_queued = [], [], 0
    for i in range(MAX_OUTAGE_PREDICTIONS):
        inference_id, seconds = score(transformer, f"outage-{i}")
        outage.append(inference_id)
        took.append(seconds)
        counts = counters(transformer)
        most_queued = max(most_queued, int(counts[QUEUED]))
        if counts[FAILED] >= 4 and counts[DROPPED] >= 2:  # two records given up, one dropped
            break
    else:
        raise AssertionError(f"after {MAX_OUTAGE_PREDICTIONS} predictions still no record given up and dropped")
    # A prediction that waited for its events would take at least the retry window, as they were all refused.
    assert max(took) < RETRY_S, took
    assert most_queued <= QUEUE
    assert sink.refused >= 4

    sink.down = False
    backlog = settled(transformer)  # the records the queue held at the end of the outage reach the sink
    after = [score(transformer, f"after-{i}")[0] for i in range(3)]
    counts = settled(transformer)

    scored = 1 + len(outage) + len(after)
    received = [e["headers"]["ce-id"] for e in sink.events]
    assert counts[SUBMITTED] == 2 * scored
    assert counts[SENT] + counts[FAILED] + counts[DROPPED] == 2 * scored
    assert counts[SENT] == len(received)  # every event counted sent is one the sink took, none twice
    assert set(received) <= {warm_up, *outage, *after}
    assert all(received.count(inference_id) == 2 for inference_id in set(received))  # whole pairs only
    assert outage[0] not in received  # the oldest record of the outage was given up, not delivered late
    assert backlog[SENT] > 2  # the backlog went out once the sink was back ...
    assert set(after) <= set(received)  # ... and new records flow again
    assert (counts[FAILED], counts[DROPPED]) == (backlog[FAILED], backlog[DROPPED])  # nothing lost since
