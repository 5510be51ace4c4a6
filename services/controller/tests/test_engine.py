"""The state machine's common paths: starting, refusing, spec changes, the analysis, the router going away,
idempotence and crash replays, conditions, requeue, and the routes it asks for.

Strategies end to end are in test_engine_<strategy>.py, intents in test_engine_intents.py.
"""

from __future__ import annotations

from datetime import timedelta

from flywheel_contracts import IntentAction, Phase, Verdict
from flywheel_contracts.rollout import DECISIONS_KEPT
from flywheel_controller._engine import analysis_due, desired_route, reconcile, released_route
from flywheel_controller._types import CandidateGates, DesiredRoute, RouterView, Tick

from builders import (
    ERRORS,
    LATENCY,
    T0,
    Flight,
    blue_green,
    canary,
    pause,
    result,
    rollout,
    shadow,
    weight,
)

STEPS = (weight(10), pause("10m"), weight(50), pause())


def started(**kwargs) -> Flight:
    flight = Flight(rollout(canary(*STEPS), **kwargs))
    flight.tick()
    return flight


def at_weight_10(**kwargs) -> Flight:
    flight = started(**kwargs)
    flight.advance(0.05).tick()
    assert flight.status.candidate_weight == 10
    return flight


# ------------------------------------------------------------------------------------------------ start


def test_a_new_rollout_starts_on_the_spec_stable():
    flight = Flight(rollout(canary(*STEPS)), router_stable="v0")
    outcome = flight.tick()

    status = outcome.status
    assert status.phase is Phase.PROGRESSING
    assert status.stable_version == "v1"
    assert status.started_at == T0 and status.step_started_at == T0
    assert status.current_step_index == 0 and status.current_step == "1/4 setWeight 10"
    assert status.next_analysis_at == T0 + timedelta(minutes=1)
    assert status.observed_generation == 1
    assert [e.reason for e in outcome.events] == ["Started"]
    assert outcome.route == DesiredRoute(stable_version="v1", candidate_version="v2", candidate_weight=0.0)


def test_without_a_spec_stable_the_router_stable_is_the_stable():
    flight = Flight(rollout(canary(*STEPS), stable=None), router_stable="v7")
    assert flight.tick().status.stable_version == "v7"


def test_pending_waits_for_an_unreachable_router():
    flight = Flight(rollout(canary(*STEPS)))
    outcome = flight.tick(reachable=False)

    assert outcome.status.phase is Phase.PENDING
    assert outcome.status.message == "waiting for the router: connection refused"
    assert outcome.route is None
    assert outcome.requeue_after == 5.0
    assert outcome.events == []


def test_no_stable_anywhere_fails_and_says_to_set_spec_stable():
    flight = Flight(rollout(canary(*STEPS), stable=None), router_stable=None)
    outcome = flight.tick()

    assert outcome.status.phase is Phase.FAILED
    assert "spec.stable" in (outcome.status.message or "")
    assert outcome.status.finished_at == T0
    assert [(e.reason, e.type) for e in outcome.events] == [("NoStableVersion", "Warning")]
    assert outcome.route is None


def test_a_candidate_that_is_already_the_stable_fails():
    flight = Flight(rollout(canary(*STEPS), stable=None), router_stable="v2")
    outcome = flight.tick()

    assert outcome.status.phase is Phase.FAILED
    assert [e.reason for e in outcome.events] == ["CandidateIsStable"]
    assert outcome.route is None


def test_a_candidate_rejected_by_its_gates_is_refused_before_any_traffic_naming_the_gates():
    flight = Flight(rollout(canary(*STEPS)))
    outcome = flight.tick(gates=CandidateGates("rejected", "failed against v1: pr_auc_gain: lower end not above 0.0"))

    assert outcome.status.phase is Phase.FAILED and outcome.status.started_at is None
    assert "rejected by its gates" in outcome.status.message and "pr_auc_gain" in outcome.status.message
    assert [(e.reason, e.type) for e in outcome.events] == [("CandidateRejected", "Warning")]
    assert outcome.route is None and outcome.status.candidate_weight == 0


def test_a_candidate_that_cannot_be_checked_is_refused_even_while_the_router_is_down():
    flight = Flight(rollout(shadow(mirrorPercent=50, duration="10m")))
    outcome = flight.tick(gates=CandidateGates("unverified", "v2 is not published in /repo"), reachable=False)

    assert outcome.status.phase is Phase.FAILED and "not published" in outcome.status.message
    assert [e.reason for e in outcome.events] == ["CandidateUnverified"]
    assert outcome.route is None


def test_an_accepted_candidate_starts_as_before():
    flight = Flight(rollout(canary(*STEPS)))
    flight.tick(gates=CandidateGates("accepted", "published before gates existed"))
    assert flight.phase is not Phase.FAILED and flight.status.started_at is not None


def test_a_rollout_refused_for_an_older_one_of_the_same_model_fails_naming_it():
    flight = Flight(rollout(canary(*STEPS)))
    outcome = flight.tick(conflict="default/fraud-v2-canary")

    assert outcome.status.phase is Phase.FAILED
    assert "default/fraud-v2-canary" in (outcome.status.message or "")
    assert [(e.reason, e.type) for e in outcome.events] == [("ConflictingRollout", "Warning")]
    assert outcome.route is None


def test_a_conflict_reported_after_the_start_changes_nothing():
    flight = at_weight_10()
    outcome = flight.advance(1).tick(conflict="default/other")

    assert outcome.status.phase is Phase.PROGRESSING
    assert outcome.events == []


# ------------------------------------------------------------------------------------------ spec change


def test_a_spec_change_starts_again_from_the_first_step_keeping_the_decisions():
    flight = at_weight_10()
    flight.analyse(Verdict.SUCCESSFUL)
    decisions_before = list(flight.status.decisions)
    flight.edit(candidate=flight.rollout.spec.candidate.model_copy(update={"version": "v3"}))

    outcome = flight.advance(1).tick()

    status = outcome.status
    assert [e.reason for e in outcome.events] == ["SpecChanged", "Started"]
    assert status.phase is Phase.PROGRESSING and status.observed_generation == 2
    assert status.candidate_weight == 0 and status.current_step_index == 0
    assert status.last_analysis is None and status.evidence == []
    assert status.decisions[: len(decisions_before)] == decisions_before
    assert [d.action for d in status.decisions[len(decisions_before) :]] == ["SpecChanged", "Start"]
    assert outcome.route is not None and outcome.route.candidate_version == "v3"
    assert outcome.route.candidate_weight == 0.0


def test_a_spec_change_ignores_the_analysis_of_the_old_spec():
    flight = at_weight_10()
    flight.advance(60)
    flight.edit(rollback=flight.rollout.spec.rollback)
    outcome = flight.tick(analysis=result(Verdict.FAILED, at=flight.now, decisive=True))

    assert outcome.status.phase is Phase.PROGRESSING
    assert outcome.status.last_analysis is None


def test_a_spec_change_restarts_an_ended_rollout():
    flight = at_weight_10()
    flight.intend(IntentAction.ABORT)
    flight.advance(1).tick()
    flight.edit(rollback=flight.rollout.spec.rollback)

    assert flight.advance(1).tick().status.phase is Phase.PROGRESSING
    assert flight.status.finished_at is None


# --------------------------------------------------------------------------------------------- analysis


def test_analysis_is_due_only_while_the_candidate_takes_traffic_and_its_time_has_come():
    flight = started()
    later = T0 + timedelta(minutes=5)
    assert not analysis_due(flight.rollout, later)  # canary at weight 0: nothing to measure

    flight.advance(0.05).tick()
    assert not analysis_due(flight.rollout, flight.now)
    assert analysis_due(flight.rollout, flight.status.next_analysis_at)

    for strategy in (blue_green(), shadow()):
        other = Flight(rollout(strategy))
        other.tick()
        assert analysis_due(other.rollout, later)

    no_metrics = Flight(rollout(blue_green(), metrics=[]))
    no_metrics.tick()
    assert not analysis_due(no_metrics.rollout, later)


def test_an_analysis_stores_the_run_and_evidence_and_schedules_the_next():
    flight = at_weight_10()
    outcome = flight.analyse(Verdict.SUCCESSFUL)

    assert outcome.status.last_analysis is not None
    assert outcome.status.last_analysis.verdict is Verdict.SUCCESSFUL
    assert [e.name for e in outcome.status.evidence] == ["errors"]
    assert outcome.status.next_analysis_at == flight.now + timedelta(minutes=1)
    assert outcome.events == []


def test_an_analysis_that_was_not_due_is_not_consulted():
    flight = at_weight_10()
    outcome = flight.advance(1).tick(analysis=result(Verdict.FAILED, at=flight.now, decisive=True))

    assert outcome.status.phase is Phase.PROGRESSING
    assert outcome.status.last_analysis is None


def test_the_first_set_weight_restarts_the_analysis_clock():
    flight = Flight(rollout(canary(pause("5m"), weight(10), pause())))
    flight.fly(600)
    set_weight = next(d for d in flight.status.decisions if d.action == "SetWeight")
    assert set_weight.time > T0 + timedelta(minutes=5)
    assert flight.status.next_analysis_at == set_weight.time + timedelta(minutes=1)


def test_failures_below_the_limit_keep_going_and_at_the_limit_roll_back():
    flight = at_weight_10(failure_limit=2)
    assert flight.analyse(Verdict.FAILED).status.phase is Phase.PROGRESSING

    outcome = flight.analyse(Verdict.FAILED, metrics={"errors": (Verdict.FAILED, "error rate 3.1% > 1%")})

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert outcome.status.candidate_weight == 0
    assert [(e.reason, e.type) for e in outcome.events] == [("RolledBack", "Warning")]
    assert "error rate 3.1% > 1%" in outcome.events[0].message
    assert "2 failed analyses in a row" in (outcome.status.message or "")
    assert outcome.route == DesiredRoute(stable_version="v1")
    assert outcome.status.decisions[-1].verdict is Verdict.FAILED


def test_one_decisive_failure_is_enough_to_roll_back():
    flight = at_weight_10(failure_limit=5)
    outcome = flight.analyse(Verdict.FAILED, decisive=True)

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert "decisive" in (outcome.status.message or "")


def test_without_automatic_rollback_a_failure_pauses_naming_the_failing_metrics():
    flight = at_weight_10(automatic=False, metrics=[ERRORS, LATENCY])
    outcome = flight.analyse(
        Verdict.FAILED,
        decisive=True,
        metrics={"errors": (Verdict.SUCCESSFUL, None), "latency": (Verdict.FAILED, "p99 80 ms > 50 ms")},
    )

    assert outcome.status.phase is Phase.PAUSED
    assert outcome.status.paused_reason is not None and "latency" in outcome.status.paused_reason
    assert "errors" not in outcome.status.paused_reason
    assert outcome.status.candidate_weight == 10
    assert [e.reason for e in outcome.events] == ["Paused"]


def test_inconclusive_analyses_in_a_row_pause_the_rollout():
    flight = at_weight_10(inconclusive_limit=3)
    flight.analyse(Verdict.INCONCLUSIVE)
    flight.analyse(Verdict.INSUFFICIENT_SAMPLES)
    outcome = flight.analyse(Verdict.INCONCLUSIVE, metrics={"errors": (Verdict.INCONCLUSIVE, "router down")})

    assert outcome.status.phase is Phase.PAUSED
    assert outcome.status.paused_reason == "3 inconclusive analyses in a row: errors (router down)"
    assert [e.reason for e in outcome.events] == ["Paused"]


def test_the_analysis_goes_on_while_paused_and_can_roll_back():
    flight = at_weight_10()
    flight.intend(IntentAction.PAUSE)
    flight.advance(1).tick()
    assert flight.phase is Phase.PAUSED

    assert analysis_due(flight.rollout, flight.status.next_analysis_at)
    outcome = flight.analyse(Verdict.FAILED, decisive=True)
    assert outcome.status.phase is Phase.ROLLED_BACK


def test_resume_clears_the_streak_so_the_next_unclear_run_does_not_pause_again():
    flight = at_weight_10(inconclusive_limit=1)
    flight.analyse(Verdict.INCONCLUSIVE)
    assert flight.phase is Phase.PAUSED

    flight.intend(IntentAction.RESUME)
    flight.advance(1).tick()
    assert flight.phase is Phase.PROGRESSING
    assert flight.status.last_analysis is not None and flight.status.last_analysis.consecutive_inconclusive == 0


# -------------------------------------------------------------------------------------- router away


def test_an_unreachable_router_holds_the_step_and_says_why():
    flight = started()
    outcome = flight.advance(0.05).tick(reachable=False)

    assert outcome.status.candidate_weight == 0 and outcome.status.current_step_index == 0
    assert outcome.events == []
    assert (outcome.status.message or "").startswith("router unreachable (connection refused)")
    assert outcome.requeue_after == 5.0
    assert flight.advance(5).tick().status.candidate_weight == 10


def test_an_unreachable_router_does_not_stop_a_rollback():
    flight = at_weight_10()
    outcome = flight.analyse(Verdict.FAILED, decisive=True, reachable=False)

    assert outcome.status.phase is Phase.ROLLED_BACK
    assert outcome.route == DesiredRoute(stable_version="v1")  # written when the router is back


def test_a_promote_waits_for_the_router_and_runs_when_it_is_back():
    flight = Flight(rollout(canary(weight(10), pause())))
    flight.fly(60)
    assert flight.phase is Phase.PAUSED
    intent = flight.intend(IntentAction.PROMOTE)

    outcome = flight.advance(1).tick(reachable=False)
    assert outcome.status.intent_handled is None
    assert "waits for the router" in (outcome.status.message or "")

    outcome = flight.advance(5).tick()
    assert outcome.status.intent_handled == intent
    assert [e.reason for e in outcome.events] == ["Promoted"]


def test_the_router_reachable_condition_keeps_its_transition_time_until_it_flips():
    flight = at_weight_10()
    first = {c.type: c for c in flight.status.conditions}["RouterReachable"]
    flight.advance(1).tick()
    assert {c.type: c for c in flight.status.conditions}["RouterReachable"] == first

    flight.advance(1).tick(reachable=False)
    down = {c.type: c for c in flight.status.conditions}["RouterReachable"]
    assert (down.status, down.reason, down.last_transition_time) == ("False", "RouterUnreachable", flight.now)


def test_conditions_say_whether_traffic_moves_and_how_the_candidate_fares():
    flight = at_weight_10()
    flight.analyse(Verdict.FAILED, metrics={"errors": (Verdict.FAILED, None)})
    conditions = {c.type: c for c in flight.status.conditions}
    assert conditions["Progressing"].status == "True"
    assert (conditions["Healthy"].status, conditions["Healthy"].reason) == ("False", "AnalysisFailed")

    flight.analyse(Verdict.FAILED)
    conditions = {c.type: c for c in flight.status.conditions}
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == ("False", "RolledBack")


# --------------------------------------------------------------------------- idempotence and crashes


def test_reconciling_twice_with_the_same_tick_adds_nothing_in_every_phase():
    flight = Flight(rollout(canary(*STEPS)))
    seen = set()
    # Flight.tick checks the replay on every reconcile; this walk makes sure every phase was visited.
    flight.tick(reachable=False)
    seen.add(flight.phase)
    flight.fly(3600)
    seen.add(flight.phase)
    flight.intend(IntentAction.ABORT)
    flight.advance(1).tick()
    seen.add(flight.phase)
    flight.intend(IntentAction.RETRY)
    flight.advance(1).tick()
    seen.add(flight.phase)
    flight.fly(3600)
    flight.intend(IntentAction.PROMOTE, full=True)
    flight.advance(1).tick()
    seen.add(flight.phase)
    flight.intend(IntentAction.UNDO)
    flight.advance(1).tick()
    seen.add(flight.phase)
    refused = Flight(rollout(canary(*STEPS)))
    refused.tick(conflict="default/older")
    seen.add(refused.phase)
    assert seen == set(Phase)


def test_ended_rollouts_stay_as_they_are():
    ended = []
    for action in (IntentAction.ABORT, IntentAction.PROMOTE):
        flight = at_weight_10()
        flight.intend(action, full=True)
        flight.advance(1).tick()
        ended.append(flight)
    rolled_back = at_weight_10()
    rolled_back.analyse(Verdict.FAILED, decisive=True)
    refused = Flight(rollout(canary(*STEPS)))
    refused.tick(conflict="default/older")

    for flight in [*ended, rolled_back, refused]:
        assert flight.phase.is_terminal()
        before = flight.status
        for _ in range(3):
            outcome = flight.advance(60).tick()
            assert outcome.events == []
            assert outcome.status == before
            assert outcome.requeue_after == 5.0


def test_killed_before_the_status_write_the_same_step_is_decided_again():
    flight = started()
    flight.advance(0.05)
    tick = flight.make_tick()
    first = reconcile(flight.rollout, tick)
    replay = reconcile(flight.rollout, tick)  # the status write never happened: same input, same decision

    assert replay == first
    assert first.status.candidate_weight == 10


def test_killed_between_status_and_route_the_route_is_written_again_without_a_second_step():
    flight = Flight(rollout(canary(weight(10), weight(20), weight(30))))
    flight.tick()
    flight.advance(0.05)
    tick = flight.make_tick()
    written = reconcile(flight.rollout, tick)  # status S' written, then the controller died
    restarted = flight.rollout.model_copy(update={"status": written.status})

    replay = reconcile(restarted, tick)
    assert replay.events == [] and replay.status == written.status
    assert replay.route == written.route and replay.route is not None and replay.route.candidate_weight == 10

    # A fresh tick later moves exactly one step on from there: 10 -> 20, never straight to 30.
    later = reconcile(restarted, flight.advance(0.05).make_tick())
    assert later.route is not None and later.route.candidate_weight == 20
    assert [e.reason for e in later.events] == ["SetWeight"]


def test_killed_mid_promotion_the_stable_is_promoted_once():
    flight = Flight(rollout(canary(weight(50))))
    flight.fly(1)
    assert flight.phase is Phase.SUCCEEDED
    promoted = flight.status

    for seconds in (0, 0.05, 60):
        outcome = flight.advance(seconds).tick()
        assert outcome.events == []
        assert (outcome.status.stable_version, outcome.status.previous_stable_version) == ("v2", "v1")
        assert outcome.status == promoted
        assert outcome.route == DesiredRoute(stable_version="v2")


def test_an_intent_is_handled_once():
    flight = at_weight_10()
    flight.intend(IntentAction.PAUSE)
    flight.advance(1).tick()
    flight.intend(IntentAction.RESUME)
    flight.advance(1).tick()
    handled = flight.status.intent_handled

    for _ in range(3):
        outcome = flight.advance(1).tick()
        assert not any(e.reason in ("Resumed", "Refused") for e in outcome.events)
    assert flight.status.intent_handled == handled


# ----------------------------------------------------------------------------------- bookkeeping


def test_decisions_are_bounded():
    flight = at_weight_10()
    for _ in range(DECISIONS_KEPT):
        flight.intend(IntentAction.PAUSE)
        flight.advance(1).tick()
        flight.intend(IntentAction.RESUME)
        flight.advance(1).tick()

    assert len(flight.status.decisions) == DECISIONS_KEPT
    assert flight.status.decisions[-1].action == "Resume"


def test_requeue_is_the_time_to_the_next_thing_to_do_within_bounds():
    flight = at_weight_10()  # in a 10-minute pause; the next analysis is a minute away
    assert flight.last is not None and flight.last.requeue_after == 5.0
    flight.advance(58)
    assert flight.tick().requeue_after == 2.0
    assert flight.advance(10).tick().requeue_after == 0.05  # analysis due now


def test_a_status_round_trips_through_its_json():
    flight = at_weight_10()
    flight.analyse(Verdict.SUCCESSFUL)
    status = flight.status
    assert type(status).model_validate(status.to_json()) == status


# ------------------------------------------------------------------------------------------ routes


def test_routes_carry_endpoints_and_stickiness_from_the_spec():
    flight = Flight(
        rollout(
            canary(weight(10), pause(), stickiness={"header": "x-card-id"}),
            stable_endpoint="http://fraud-v1:8090",
            candidate_endpoint="http://fraud-v2:8090",
        )
    )
    flight.tick()
    outcome = flight.advance(0.05).tick()

    assert outcome.route == DesiredRoute(
        stable_version="v1",
        stable_endpoint="http://fraud-v1:8090",
        candidate_version="v2",
        candidate_endpoint="http://fraud-v2:8090",
        candidate_weight=10.0,
        sticky_header="x-card-id",
    )
    flight.intend(IntentAction.PROMOTE, full=True)
    promoted = flight.advance(1).tick()
    assert promoted.route == DesiredRoute(stable_version="v2", stable_endpoint="http://fraud-v2:8090")


def test_the_route_is_left_alone_before_the_start_and_after_a_refusal():
    flight = Flight(rollout(canary(*STEPS)))
    assert desired_route(flight.rollout, flight.status) is None
    flight.tick(conflict="default/older")
    assert desired_route(flight.rollout, flight.status) is None


def test_a_deleted_rollout_mid_flight_gives_all_traffic_back_to_its_stable():
    flight = at_weight_10(stable_endpoint="http://fraud-v1:8090")
    assert released_route(flight.rollout) == DesiredRoute(stable_version="v1", stable_endpoint="http://fraud-v1:8090")

    flight.intend(IntentAction.PAUSE)
    flight.advance(1).tick()
    assert released_route(flight.rollout) == DesiredRoute(stable_version="v1", stable_endpoint="http://fraud-v1:8090")


def test_a_deleted_rollout_that_never_started_or_ended_leaves_the_router_alone():
    pending = Flight(rollout(canary(*STEPS)))
    pending.tick(reachable=False)
    assert released_route(pending.rollout) is None

    ended = at_weight_10()
    ended.intend(IntentAction.ABORT)
    ended.advance(1).tick()
    assert released_route(ended.rollout) is None


def test_reconcile_is_a_pure_function_of_its_arguments():
    flight = at_weight_10()
    tick = Tick(now=flight.now + timedelta(minutes=1), router=RouterView(reachable=True, stable_version="v1"))
    assert reconcile(flight.rollout, tick) == reconcile(flight.rollout, tick)
