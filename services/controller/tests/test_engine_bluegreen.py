"""Blue-green end to end: a preview by header, the switch after a good verdict (or a person's promote),
and the old stable kept routable until oldStableUntil so an undo is instant."""

from __future__ import annotations

from datetime import timedelta

from flywheel_contracts import IntentAction, Phase, Verdict
from flywheel_controller._types import DesiredRoute

from builders import Flight, blue_green, rollout

EXAMPLE = blue_green(previewDuration="15m", autoPromote=True, scaleDownDelay="10m")


def test_the_candidate_is_previewed_by_header_at_weight_zero():
    flight = Flight(rollout(EXAMPLE, candidate_endpoint="http://fraud-v2:8090"))
    outcome = flight.tick()

    assert outcome.status.current_step == "preview 15m"
    assert outcome.route == DesiredRoute(
        stable_version="v1",
        candidate_version="v2",
        candidate_endpoint="http://fraud-v2:8090",
        candidate_weight=0.0,
        preview_header="x-flywheel-preview",
    )
    assert "previewing v2 through header x-flywheel-preview until 21:15:00" in (outcome.status.message or "")


def test_after_a_good_preview_all_traffic_switches_and_the_old_stable_stays_until_the_delay_ends():
    flight = Flight(rollout(EXAMPLE))
    flight.fly(20 * 60)

    status = flight.status
    assert status.phase is Phase.SUCCEEDED
    assert (status.stable_version, status.previous_stable_version, status.candidate_weight) == ("v2", "v1", 100)
    assert status.finished_at is not None
    switched_at = status.finished_at
    assert status.old_stable_until == switched_at + timedelta(minutes=10)
    assert flight.last is not None
    assert flight.last.route == DesiredRoute(stable_version="v2", candidate_version="v1")
    assert flight.last.requeue_after == 5.0

    flight.now = switched_at + timedelta(minutes=10) - timedelta(seconds=2)
    assert flight.tick().requeue_after == 2.0

    outcome = flight.advance(2).tick()
    assert [e.reason for e in outcome.events] == ["OldStableReleased"]
    assert outcome.status.old_stable_until is None
    assert outcome.status.previous_stable_version == "v1"  # undo still knows where to go
    assert outcome.route == DesiredRoute(stable_version="v2")
    assert flight.advance(60).tick().events == []


def test_the_switch_waits_for_a_successful_verdict():
    flight = Flight(rollout(blue_green(previewDuration="2m")))
    flight.tick()
    flight.analyse(Verdict.SUCCESSFUL)
    flight.analyse(Verdict.INCONCLUSIVE)

    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.PROGRESSING
    assert "time is up, waiting for a Successful analysis" in (outcome.status.message or "")

    assert flight.analyse(Verdict.SUCCESSFUL).status.phase is Phase.SUCCEEDED


def test_without_auto_promote_the_preview_waits_for_a_person():
    flight = Flight(rollout(blue_green(previewDuration="2m", autoPromote=False)))
    flight.fly(600)
    assert flight.phase is Phase.PAUSED
    assert flight.status.paused_reason == "preview passed; waits for promote"
    assert flight.last is not None and flight.last.route is not None
    assert flight.last.route.preview_header == "x-flywheel-preview"

    flight.intend(IntentAction.RESUME)
    assert [e.reason for e in flight.advance(1).tick().events] == ["Refused"]

    flight.intend(IntentAction.PROMOTE)
    outcome = flight.advance(1).tick()
    assert [e.reason for e in outcome.events] == ["Promoted", "Succeeded"]
    assert outcome.status.stable_version == "v2"


def test_promote_during_the_preview_switches_at_once():
    flight = Flight(rollout(EXAMPLE))
    flight.tick()
    flight.intend(IntentAction.PROMOTE)

    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.SUCCEEDED
    assert outcome.route == DesiredRoute(stable_version="v2", candidate_version="v1")


def test_undo_within_the_delay_puts_the_old_stable_back():
    flight = Flight(rollout(EXAMPLE))
    flight.fly(20 * 60)
    flight.intend(IntentAction.UNDO)

    outcome = flight.advance(60).tick()
    assert outcome.status.phase is Phase.ROLLED_BACK
    assert (outcome.status.stable_version, outcome.status.previous_stable_version) == ("v1", None)
    assert outcome.status.old_stable_until is None and outcome.status.candidate_weight == 0
    assert (outcome.status.message or "").startswith("undone")
    assert outcome.route == DesiredRoute(stable_version="v1")


def test_a_failed_preview_rolls_back():
    flight = Flight(rollout(EXAMPLE))
    flight.tick()
    outcome = flight.analyse(Verdict.FAILED, decisive=True)

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert outcome.route == DesiredRoute(stable_version="v1")
