"""Every intent in every phase: what it does where it fits, and an Ignored record where it does not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flywheel_contracts import IntentAction, Phase, Verdict

from builders import Flight, canary, pause, rollout, weight

STEPS = (weight(10), pause("10m"), weight(50), pause(), weight(80))


def pending() -> Flight:
    flight = Flight(rollout(canary(*STEPS)))
    flight.tick(reachable=False)
    return flight


def progressing() -> Flight:
    flight = Flight(rollout(canary(*STEPS)))
    flight.tick()
    flight.advance(0.05).tick()  # weight 10, in the 10m pause
    return flight


def paused() -> Flight:
    flight = Flight(rollout(canary(*STEPS)))
    flight.fly(3600)  # at the open pause, weight 50
    assert flight.phase is Phase.PAUSED
    return flight


def succeeded() -> Flight:
    flight = progressing()
    flight.intend(IntentAction.PROMOTE, full=True)
    flight.advance(1).tick()
    return flight


def rolled_back() -> Flight:
    flight = progressing()
    flight.analyse(Verdict.FAILED, decisive=True)
    return flight


def aborted() -> Flight:
    flight = progressing()
    flight.intend(IntentAction.ABORT)
    flight.advance(1).tick()
    return flight


def failed() -> Flight:
    flight = Flight(rollout(canary(*STEPS)))
    flight.tick(conflict="default/older")
    return flight


PHASES: dict[Phase, Callable[[], Flight]] = {
    Phase.PENDING: pending,
    Phase.PROGRESSING: progressing,
    Phase.PAUSED: paused,
    Phase.SUCCEEDED: succeeded,
    Phase.ROLLED_BACK: rolled_back,
    Phase.ABORTED: aborted,
    Phase.FAILED: failed,
}

P, G, U, S, R, A, F = (
    Phase.PENDING,
    Phase.PROGRESSING,
    Phase.PAUSED,
    Phase.SUCCEEDED,
    Phase.ROLLED_BACK,
    Phase.ABORTED,
    Phase.FAILED,
)
IGNORED = None
# (action, full) -> phase before -> phase after (IGNORED: recorded as Ignored, phase unchanged).
TABLE: dict[tuple[IntentAction, bool], dict[Phase, Phase | None]] = {
    (IntentAction.PROMOTE, False): {P: IGNORED, G: G, U: G, S: IGNORED, R: IGNORED, A: IGNORED, F: IGNORED},
    (IntentAction.PROMOTE, True): {P: IGNORED, G: S, U: S, S: IGNORED, R: IGNORED, A: IGNORED, F: IGNORED},
    (IntentAction.ABORT, False): {P: A, G: A, U: A, S: IGNORED, R: IGNORED, A: IGNORED, F: IGNORED},
    (IntentAction.RETRY, False): {P: IGNORED, G: IGNORED, U: IGNORED, S: IGNORED, R: G, A: G, F: G},
    (IntentAction.UNDO, False): {P: IGNORED, G: IGNORED, U: IGNORED, S: R, R: IGNORED, A: IGNORED, F: IGNORED},
    (IntentAction.PAUSE, False): {P: IGNORED, G: U, U: IGNORED, S: IGNORED, R: IGNORED, A: IGNORED, F: IGNORED},
    # Resume in Paused: this Paused is the open pause, which only promote leaves.
    (IntentAction.RESUME, False): {P: IGNORED, G: IGNORED, U: IGNORED, S: IGNORED, R: IGNORED, A: IGNORED, F: IGNORED},
}
CASES = [(action, full, phase, after) for (action, full), row in TABLE.items() for phase, after in row.items()]


@pytest.mark.parametrize(
    ("action", "full", "phase", "after"),
    CASES,
    ids=[f"{a.value}{'-full' if f else ''}-in-{p.value}" for a, f, p, _ in CASES],
)
def test_every_intent_in_every_phase(action: IntentAction, full: bool, phase: Phase, after: Phase | None):
    flight = PHASES[phase]()
    assert flight.phase is phase
    decisions = len(flight.status.decisions)
    intent = flight.intend(action, full=full)

    # Pending stays Pending only while the router is away; every other phase sees it answer.
    outcome = flight.advance(1).tick(reachable=phase is not Phase.PENDING)

    assert outcome.status.intent_handled == intent
    recorded = [d.action for d in outcome.status.decisions[decisions:]]
    if after is IGNORED:
        assert outcome.status.phase is phase
        assert recorded == ["Ignored"]
        assert [e.reason for e in outcome.events] == ["Refused"]
        assert intent in outcome.events[0].message
    else:
        assert outcome.status.phase is after
        assert "Ignored" not in recorded


def test_promote_at_an_open_pause_goes_to_the_next_step():
    flight = paused()
    flight.intend(IntentAction.PROMOTE)
    outcome = flight.advance(1).tick()

    assert outcome.status.current_step_index == 4 and outcome.status.paused_reason is None
    assert flight.advance(0.05).tick().status.candidate_weight == 80


def test_promote_resumes_a_rollout_paused_for_another_reason_and_goes_on():
    flight = progressing()
    flight.intend(IntentAction.PAUSE)
    flight.advance(1).tick()
    flight.intend(IntentAction.PROMOTE)

    outcome = flight.advance(1).tick()
    assert outcome.status.phase is Phase.PROGRESSING
    assert outcome.status.current_step_index == 2  # it also left the timed pause it was in


def test_pause_and_resume_hold_and_release_the_weight():
    flight = progressing()
    flight.intend(IntentAction.PAUSE)
    outcome = flight.advance(1).tick()
    assert outcome.status.paused_reason == "paused by a person (intent-1)"
    assert "paused: paused by a person" in (outcome.status.message or "")

    flight.advance(3600).tick()
    assert flight.status.candidate_weight == 10  # the 10m pause is long over, yet nothing moves

    flight.intend(IntentAction.RESUME)
    outcome = flight.advance(1).tick()
    assert [e.reason for e in outcome.events] == ["Resumed"]
    assert outcome.status.phase is Phase.PROGRESSING
    assert [e.reason for e in flight.analyse(Verdict.SUCCESSFUL).events] == ["PauseEnded"]


def test_abort_sends_all_traffic_to_the_stable():
    flight = progressing()
    flight.intend(IntentAction.ABORT)
    outcome = flight.advance(1).tick()

    assert [(e.reason, e.type) for e in outcome.events] == [("Aborted", "Warning")]
    assert outcome.status.candidate_weight == 0 and outcome.status.finished_at == flight.now
    assert outcome.route is not None and outcome.route.candidate_version is None


def test_retry_starts_again_keeping_the_stable_and_clearing_the_evidence():
    flight = rolled_back()
    flight.intend(IntentAction.RETRY)
    outcome = flight.advance(1).tick()

    assert [e.reason for e in outcome.events] == ["Retried", "Started"]
    status = outcome.status
    assert status.stable_version == "v1" and status.last_analysis is None and status.evidence == []
    assert status.current_step_index == 0 and status.finished_at is None


def test_undo_after_a_canary_makes_the_previous_stable_the_stable():
    flight = succeeded()
    flight.intend(IntentAction.UNDO)
    outcome = flight.advance(1).tick()

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert outcome.status.stable_version == "v1"
    assert (outcome.status.message or "").startswith("undone")
    assert outcome.route is not None and outcome.route.stable_version == "v1"

    flight.intend(IntentAction.UNDO)  # a second undo has nothing left to undo
    assert [e.reason for e in flight.advance(1).tick().events] == ["Refused"]
