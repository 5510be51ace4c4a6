"""A canary end to end under a fake clock: weights step by step, timed pauses that wait for a good verdict,
an open pause that waits for a person, and the promotion after the last step."""

from __future__ import annotations

from datetime import timedelta

from flywheel_contracts import IntentAction, Phase, Verdict
from flywheel_controller._types import DesiredRoute

from builders import T0, Flight, canary, pause, rollout, weight

EXAMPLE = canary(
    weight(5), pause("10m"), weight(25), pause("30m"), weight(50), pause(), stickiness={"header": "x-card-id"}
)


def test_the_example_canary_runs_to_success():
    flight = Flight(rollout(EXAMPLE))
    weights = []

    flight.fly(3 * 3600)  # up to the open pause
    weights += [d.weight for d in flight.status.decisions if d.action == "SetWeight"]
    assert flight.phase is Phase.PAUSED
    assert flight.status.paused_reason == "step 6/6 waits for promote"
    assert flight.status.current_step == "6/6 pause (until promoted)"
    assert flight.last is not None and flight.last.route is not None
    assert flight.last.route.candidate_weight == 50.0 and flight.last.route.sticky_header == "x-card-id"
    assert flight.now - T0 < timedelta(minutes=42)

    flight.intend(IntentAction.PROMOTE)
    flight.advance(1).tick()
    flight.fly(60)

    assert weights == [5, 25, 50]
    assert flight.reasons == [
        "Started",
        "SetWeight",
        "PauseEnded",
        "SetWeight",
        "PauseEnded",
        "SetWeight",
        "Paused",
        "Promoted",
        "Succeeded",
    ]
    status = flight.status
    assert status.phase is Phase.SUCCEEDED
    assert (status.stable_version, status.previous_stable_version, status.candidate_weight) == ("v2", "v1", 100)
    assert status.finished_at is not None and status.current_step == "done"
    assert flight.last is not None and flight.last.route == DesiredRoute(stable_version="v2")


def test_each_reconcile_takes_one_step():
    flight = Flight(rollout(canary(weight(10), weight(20), weight(30))))
    flight.tick()
    for expected in (10, 20, 30):
        outcome = flight.advance(0.05).tick()
        assert outcome.status.candidate_weight == expected
        assert [e.reason for e in outcome.events] == ["SetWeight"]
        assert outcome.requeue_after == 0.05
    assert flight.status.current_step == "3/3 done: promote"
    assert [e.reason for e in flight.advance(0.05).tick().events] == ["Succeeded"]


def test_a_timed_pause_holds_until_its_time_is_up():
    flight = Flight(rollout(canary(weight(10), pause("10m"), weight(20))))
    flight.tick()
    flight.advance(0.05).tick()
    assert flight.status.current_step == "2/3 pause 10m"

    outcome = flight.advance(300).tick()
    assert outcome.status.candidate_weight == 10 and outcome.events == []
    assert "holding v2 at 10% until 21:10:00" in (outcome.status.message or "")


def test_a_pause_whose_time_is_up_waits_for_a_successful_verdict_in_the_step():
    flight = Flight(rollout(canary(weight(10), pause("2m"), weight(20))))
    flight.tick()
    flight.advance(0.05).tick()
    flight.analyse(Verdict.SUCCESSFUL)
    flight.analyse(Verdict.INSUFFICIENT_SAMPLES)  # at 2m 0.05s: the time is up, the verdict is not good

    outcome = flight.advance(1).tick()
    assert outcome.status.current_step_index == 1
    assert "waiting for a Successful analysis (latest verdict InsufficientSamples)" in (outcome.status.message or "")

    outcome = flight.analyse(Verdict.SUCCESSFUL)
    assert [e.reason for e in outcome.events] == ["PauseEnded"]
    assert outcome.status.decisions[-1].verdict is Verdict.SUCCESSFUL


def test_a_run_from_before_the_pause_began_does_not_end_it():
    flight = Flight(rollout(canary(weight(10), pause("30s"), weight(20))))
    flight.tick()
    flight.advance(0.05).tick()
    flight.advance(60).tick()

    assert flight.status.current_step_index == 1  # no run in this step yet: the candidate is not judged
    assert "no analysis in this step yet" in (flight.status.message or "")


def test_a_pause_without_metrics_ends_on_time_alone():
    flight = Flight(rollout(canary(weight(10), pause("1m"), weight(20), pause()), metrics=[]))
    flight.fly(61)
    assert flight.status.candidate_weight == 20


def test_an_open_pause_waits_for_promote_and_resume_is_refused_there():
    flight = Flight(rollout(canary(weight(10), pause(), weight(20))))
    flight.fly(3600)
    assert flight.phase is Phase.PAUSED and flight.status.current_step_index == 1

    flight.intend(IntentAction.RESUME)
    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.PAUSED
    assert [e.reason for e in outcome.events] == ["Refused"]
    assert "use promote" in outcome.events[0].message

    flight.intend(IntentAction.PROMOTE)
    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.PROGRESSING and outcome.status.current_step_index == 2
    assert flight.advance(0.05).tick().status.candidate_weight == 20


def test_promote_skips_a_timed_pause():
    flight = Flight(rollout(canary(weight(10), pause("1h"), weight(20))))
    flight.fly(1)
    flight.intend(IntentAction.PROMOTE)

    outcome = flight.advance(1).tick()
    assert [e.reason for e in outcome.events] == ["Promoted"]
    assert outcome.status.current_step_index == 2


def test_promote_full_makes_the_candidate_the_stable_at_once():
    flight = Flight(rollout(canary(weight(10), pause("1h"), weight(20))))
    flight.fly(1)
    flight.intend(IntentAction.PROMOTE, full=True)

    outcome = flight.advance(1).tick()
    assert [e.reason for e in outcome.events] == ["Promoted", "Succeeded"]
    assert (outcome.status.stable_version, outcome.status.candidate_weight) == ("v2", 100)


def test_a_canary_that_starts_with_a_pause_is_not_held_for_a_verdict_it_cannot_get():
    flight = Flight(rollout(canary(pause("1m"), weight(10), pause())))
    flight.fly(120)
    assert flight.status.candidate_weight == 10  # at weight 0 nothing is measured, so time alone ends the pause
