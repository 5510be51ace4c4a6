"""Shadow end to end: requests mirrored to the candidate for a duration, then either promoted or left as
evidence with the stable unchanged."""

from __future__ import annotations

from flywheel_contracts import IntentAction, Phase, Verdict
from flywheel_controller._types import DesiredRoute

from builders import Flight, rollout, shadow


def test_the_candidate_gets_mirrored_traffic_only():
    flight = Flight(rollout(shadow(mirrorPercent=40, duration="1h")))
    outcome = flight.tick()

    assert outcome.route == DesiredRoute(
        stable_version="v1", candidate_version="v2", candidate_weight=0.0, shadow_percent=40.0
    )
    assert outcome.status.current_step == "shadow 40% for 1h"
    assert "mirroring 40% of requests to v2 until 22:00:00" in (outcome.status.message or "")


def test_a_passing_shadow_without_promote_ends_with_the_stable_unchanged():
    flight = Flight(rollout(shadow(duration="1h", promote=False), stable=None))
    flight.fly(2 * 3600)

    status = flight.status
    assert status.phase is Phase.SUCCEEDED
    assert status.message == "shadow verdict passed; stable unchanged (promote: false)"
    assert (status.stable_version, status.previous_stable_version, status.candidate_weight) == ("v1", None, 0)
    assert flight.last is not None and flight.last.route == DesiredRoute(stable_version="v1")
    assert flight.reasons == ["Started", "Succeeded"]


def test_a_passing_shadow_with_promote_makes_the_candidate_the_stable():
    flight = Flight(rollout(shadow(duration="30m", promote=True)))
    flight.fly(3600)

    assert flight.phase is Phase.SUCCEEDED
    assert (flight.status.stable_version, flight.status.previous_stable_version) == ("v2", "v1")
    assert flight.last is not None and flight.last.route == DesiredRoute(stable_version="v2")


def test_the_end_waits_for_a_successful_verdict():
    flight = Flight(rollout(shadow(duration="2m")))
    flight.tick()
    flight.analyse(Verdict.SUCCESSFUL)
    flight.analyse(Verdict.INSUFFICIENT_SAMPLES)

    assert flight.advance(1).tick().status.phase is Phase.PROGRESSING
    assert flight.analyse(Verdict.SUCCESSFUL).status.phase is Phase.SUCCEEDED


def test_a_failing_shadow_rolls_back_and_stops_mirroring():
    flight = Flight(rollout(shadow(duration="1h")))
    flight.tick()
    flight.analyse(Verdict.FAILED)
    outcome = flight.analyse(Verdict.FAILED)

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert outcome.route == DesiredRoute(stable_version="v1")


def test_promote_without_full_has_nothing_to_leave_in_a_running_shadow():
    flight = Flight(rollout(shadow(duration="1h")))
    flight.tick()
    flight.intend(IntentAction.PROMOTE)

    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.PROGRESSING
    assert [e.reason for e in outcome.events] == ["Refused"]
    assert "promote --full" in outcome.events[0].message
