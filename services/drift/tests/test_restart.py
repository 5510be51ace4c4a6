"""Nothing accepted is lost on restart: the spool is replayed, the checkpoint resumes the analysis."""

from flywheel_drift._spool import connect

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_events import kserve, transformer_request


def crash(h: Harness) -> None:
    """Stop without the final checkpoint, as a killed process would (the stores are just closed)."""
    h.service.processor._stop.set()
    h.service.spool.close()
    h.service.labels.close()


def test_events_accepted_but_not_analysed_are_replayed_after_a_crash(tmp_path, repo):
    settings = make_settings(tmp_path, durable=True)
    first = Harness(settings)
    first.service.processor.lock.acquire()  # analysis stalls: everything stays in the spool
    for seed in range(3):
        assert first.batch(synthetic_rows(400, seed), synthetic_probabilities(400, seed)).status_code == 202
    assert first.event(kserve("request"), content=transformer_request(2)).status_code == 202
    crash(first)

    second = Harness(settings)
    try:
        assert second.service.replayed == 4
        version = second.version()
        assert version["rows"] == 1200  # the half-paired request waits for its response, not lost
        assert len(second.service.processor.pairer.pending) == 1
    finally:
        second.close()
        first.service.processor.lock.release()


def test_a_checkpoint_resumes_windows_and_pending_halves_and_trims_the_spool(tmp_path, repo):
    settings = make_settings(tmp_path)
    first = Harness(settings)
    first.batch(synthetic_rows(700, 1), synthetic_probabilities(700, 1))
    first.event(kserve("request"), content=transformer_request(1))
    first.sync()
    first.close()  # a clean stop writes the checkpoint
    assert first.service.spool.path.exists()

    second = Harness(settings)
    try:
        assert second.service.replayed == 0 and second.service.spool.pending_events() == 0
        version = second.version()
        assert version["windows"] == 1 and version["open_window_rows"] == 200
        second.batch(synthetic_rows(300, 2), synthetic_probabilities(300, 2))
        assert second.version()["windows"] == 2
        assert len(second.service.processor.pairer.pending) == 1
    finally:
        second.close()


def test_an_unreadable_checkpoint_does_not_keep_the_service_down(tmp_path, repo):
    settings = make_settings(tmp_path)
    first = Harness(settings)
    first.batch(synthetic_rows(300, 1), synthetic_probabilities(300, 1))
    first.sync()
    first.close()
    conn = connect(first.service.spool.path, durable=False)
    conn.execute("UPDATE checkpoint SET state = ?", (b"not a checkpoint",))
    conn.close()
    second = Harness(settings)
    try:
        assert second.client.get("/ready").status_code == 200
        assert second.batch(synthetic_rows(300, 2), synthetic_probabilities(300, 2)).status_code == 202
        assert second.version()["rows"] == 300
    finally:
        second.close()
