"""SIGTERM as Kubernetes sends it: the queued inference log is drained within EVENT_DRAIN_TIMEOUT_S, then the
process exits 0; what could not be sent by then is counted in one log line."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess

RECORDS = 6
MARGIN_S = 10.0
"""How long past the drain deadline the process may take to exit (interpreter and KServe teardown, on a
loaded CI machine); a process that waited for a hung sink would take the 30 s post timeout at least."""


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("shutdown") / "model_repo"
    publish_version(repo)
    with FeatureServerStub() as features, PredictorStub() as predictor:
        yield repo, features, predictor


def start(upstreams, sink: CloudEventSink, log: Path, **settings: str) -> TransformerProcess:
    repo, features, predictor = upstreams
    env = {
        "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(repo),
        "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
        "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
        "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
        "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
        "FLYWHEEL_TRANSFORMER_EVENT_SENDERS": "1",
        **{f"FLYWHEEL_TRANSFORMER_{name.upper()}": value for name, value in settings.items()},
    }
    return TransformerProcess(env, log)


def queue_records(process: TransformerProcess) -> list[str]:
    """Score RECORDS requests and return their inference ids, once some of their events are still queued."""
    ids = []
    for i in range(RECORDS):
        response = process.predict([transaction(transaction_id=f"s{i}")])
        assert response.status_code == 200, response.text
        ids.append(response.json()["inference_id"])
    assert process.metric("flywheel_transformer_event_queue_records") >= 1  # SIGTERM finds work queued
    return ids


def terminate(process: TransformerProcess, timeout_s: float, after_sigterm: Callable[[], None]) -> tuple[int, str]:
    """SIGTERM, then `after_sigterm()`, then wait for the exit: the exit code and the log."""
    assert process.process is not None
    process.process.terminate()
    after_sigterm()
    try:
        code = process.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {timeout_s} s after SIGTERM:\n{process.log_path.read_text()}") from None
    return code, process.log_path.read_text()


def answer_from_now_on(sink: CloudEventSink) -> None:
    sink.hold = False
    sink.release()


def test_sigterm_drains_the_queued_events_to_a_slow_sink_then_exits_0(upstreams, tmp_path):
    # The sink holds the first event until SIGTERM is sent, so SIGTERM always finds the other records queued;
    # then it answers each event after 0.2 s: one sender, 2 events a record, ~2.4 s to drain.
    with CloudEventSink(delay_s=0.2, hold=True) as sink:
        with start(upstreams, sink, tmp_path / "drain.log", event_drain_timeout_s="20") as process:
            ids = queue_records(process)
            code, log = terminate(process, 20 + MARGIN_S, after_sigterm=lambda: answer_from_now_on(sink))
        received = [e["headers"]["ce-id"] for e in sink.events]
    assert code == 0, log
    assert sorted(received) == sorted(ids * 2)  # every record: its request and its response event
    assert re.search(r"shutdown: .*\b0 events could not be sent", log), log


def test_sigterm_with_a_hung_sink_exits_after_the_deadline_and_logs_what_it_dropped(upstreams, tmp_path):
    # The sink answers nothing until the test is over, and the post timeout is 30 s: only the drain deadline
    # (1 s) can end the wait.
    with CloudEventSink(hold=True) as sink:
        with start(
            upstreams, sink, tmp_path / "hung.log", event_drain_timeout_s="1", event_timeout_s="30"
        ) as process:
            queue_records(process)
            code, log = terminate(process, 1 + MARGIN_S, after_sigterm=lambda: None)
        assert sink.events == []
    assert code == 0, log
    lost = re.search(r"shutdown: .*\b(\d+) events could not be sent", log)
    assert lost is not None, log
    assert int(lost.group(1)) == 2 * RECORDS  # every event: queued, or in flight when the deadline passed
