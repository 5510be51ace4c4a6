"""The checkpoint is versioned JSON: every detector's state survives it exactly, a format this code does
not know starts the analysis afresh (counted, logged, later events still replayed), and a pickle in its
place is never unpickled."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from flywheel_drift._checkpoint import FORMAT_VERSION, Checkpoint, CheckpointUnreadable, dumps, loads
from flywheel_drift._monitor import VersionMonitor
from flywheel_drift._performance import evaluate
from flywheel_drift._report import version_report
from flywheel_drift._spool import connect

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request

KEY = ("fraud", "v1")


def busy_harness(tmp_path: Path) -> Harness:
    """A service whose monitor has closed windows, alarmed online, alerted, seen MMD and performance
    results, and holds an open window and a half-paired event."""
    h = Harness(make_settings(tmp_path))
    for seed in range(3):
        h.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
    h.batch(synthetic_rows(120, 9), synthetic_probabilities(120, 9))
    h.event(kserve("request"), content=transformer_request(2))
    h.sync()
    monitor = h.service.processor.monitors[KEY]
    with h.service.processor.lock:
        for at in (1.0, 2.0):
            monitor.record_mmd({"at": at, "rows": 500, "reference_rows": 500, "columns": ["amount_log"],
                                "p_value": 0.001, "distance": 0.2, "threshold": 0.05, "drift": True, "seconds": 0.1})
        rng = np.random.default_rng(0)
        y = rng.random(400) < 0.2
        result = evaluate(y, rng.random(400), monitor.reference.baseline, h.service.processor.limits, 400, 400)
        monitor.record_performance(result, 3.0)
    return h


def test_every_detectors_state_round_trips_and_resumes_exactly(tmp_path, repo):
    h = busy_harness(tmp_path)
    try:
        original = h.service.processor.monitors[KEY]
        s = original.state
        assert s.windows == 3 and s.buffer.rows == 120 and s.online_alarms and s.mmd and s.performance
        assert {a.detector.value for a in s.alerts} >= {"online", "performance"}
        pending = list(h.service.processor.pairer.pending.values())
        blob = dumps(Checkpoint(7, {KEY: s}, pending, 123.0))
        assert blob.startswith(b"{") and json.loads(blob)["format_version"] == FORMAT_VERSION
        restored = loads(blob)
        assert dumps(restored) == blob  # nothing lost or changed on the way
        assert (restored.seq, restored.saved_at) == (7, 123.0)
        (half,) = restored.pending
        assert half.id == "id-1" and np.array_equal(half.x, pending[0].x) and half.row_ids == ["t0", "t1"]

        # The restored monitor behaves exactly as the original on the same rows: windows, CUSUMs (including
        # their random tie-breaking stream), episodes and alerts.
        twin = VersionMonitor(original.reference, original.policy, restored.monitors[KEY])
        with h.service.processor.lock:
            for seed in (20, 21):
                x, p = synthetic_rows(500, seed, shift={"txn_count_24h": 2.0}), synthetic_probabilities(500, seed)
                a, b = original.ingest(1e9 + seed, x, p), twin.ingest(1e9 + seed, x, p)
                assert [x.model_dump(exclude={"id"}) for x in a] == [x.model_dump(exclude={"id"}) for x in b]
            assert scrub(version_report(original, (0, 0))) == scrub(version_report(twin, (0, 0)))
            assert np.array_equal(original.state.online.s_pos, twin.state.online.s_pos)
    finally:
        h.close()


def scrub(report: dict) -> dict:
    return {**report, "alerts": [{k: v for k, v in a.items() if k != "id"} for a in report["alerts"]]}


def write_checkpoint_blob(settings, blob: bytes) -> None:
    conn = connect(settings.spool_dir / "spool.db", durable=False)
    conn.execute("UPDATE checkpoint SET state = ?", (blob,))
    conn.close()


def read_checkpoint_blob(settings) -> bytes:
    conn = connect(settings.spool_dir / "spool.db", durable=False)
    (blob,) = conn.execute("SELECT state FROM checkpoint").fetchone()
    conn.close()
    return bytes(blob)


def test_a_checkpoint_of_an_unknown_format_version_starts_afresh_counted_and_replays_later_events(tmp_path, repo):
    settings = make_settings(tmp_path)
    first = Harness(settings)
    first.batch(synthetic_rows(700, 1), synthetic_probabilities(700, 1))
    first.sync()
    first.close()
    document = json.loads(read_checkpoint_blob(settings))
    write_checkpoint_blob(settings, json.dumps({**document, "format_version": 99}).encode())
    with pytest.raises(CheckpointUnreadable, match="format_version 99"):
        loads(read_checkpoint_blob(settings))

    second = Harness(settings)
    try:
        assert second.client.get("/ready").status_code == 200
        assert "flywheel_drift_unreadable_checkpoints_total 1.0" in second.client.get("/metrics").text
        assert second.batch(synthetic_rows(300, 2), synthetic_probabilities(300, 2)).status_code == 202
        version = second.version()
        assert version["rows"] == 300 and version["windows"] == 0  # afresh, not resumed at 700 rows
    finally:
        second.close()


class Payload:
    """A pickle that, if ever loaded, creates a file: the marker must never appear."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_in_place_of_the_checkpoint_is_never_unpickled(tmp_path, repo):
    marker = tmp_path / "unpickled"
    blob = pickle.dumps(Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointUnreadable, match="pickle"):
        loads(blob)
    with pytest.raises(CheckpointUnreadable):
        loads(pickle.dumps(Payload(marker), protocol=0))  # text protocol: not JSON either
    assert not marker.exists()

    settings = make_settings(tmp_path)
    first = Harness(settings)
    first.batch(synthetic_rows(300, 1), synthetic_probabilities(300, 1))
    first.sync()
    first.close()
    write_checkpoint_blob(settings, blob)
    second = Harness(settings)
    try:
        assert not marker.exists()
        assert second.client.get("/ready").status_code == 200
        assert "flywheel_drift_unreadable_checkpoints_total 1.0" in second.client.get("/metrics").text
    finally:
        second.close()
