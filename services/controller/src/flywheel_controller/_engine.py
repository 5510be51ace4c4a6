"""The rollout state machine: a pure function from (rollout, tick) to what the controller should do.

The reconciler reads the ModelRollout, asks the router how it is (`RouterView`), runs the analysis when
`analysis_due` says so, and calls `reconcile`; it then writes the returned status, posts the Events and
makes the router hold `Outcome.route`. Nothing here does I/O or reads a clock, so every path is tested
with a fake clock, and a controller killed anywhere recomputes the same decision from what it stored.

One reconcile, in order: a spec change starts the rollout again; the analysis just run is judged (it can
roll back or pause); a person's intent is handled (`_intents`); then the phase goes forward: Pending
starts, Progressing takes the strategy's next move (`_steps`, one per instant, none while the router does
not answer), a Succeeded blue-green lets the old stable go once oldStableUntil has passed. Last, the
message, conditions, route and requeue are derived from the status decided.

The route is a function of spec + status alone (`desired_route`), so a controller killed after writing
status but before writing the route writes the same route on its next reconcile.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from flywheel_contracts import (
    AnalysisRun,
    Condition,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    Verdict,
)

from ._intents import handle_intent
from ._steps import Draft, advance, clip, fail, next_move_in, pause, restart, roll_back, start, takes_traffic
from ._types import AnalysisResult, DesiredRoute, Outcome, Tick

_ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)
_REQUEUE_MIN = 0.05  # seconds: a move is due now (the next reconcile takes it)
_REQUEUE_MAX = 5.0  # seconds: nothing due sooner (waiting for the router, a terminal rollout)
_CONDITION_MESSAGE_MAX = 32768


def reconcile(rollout: ModelRollout, tick: Tick) -> Outcome:
    d = Draft(rollout=rollout, tick=tick, status=rollout.status)
    # The adapter ran the analysis because analysis_due said so on the status it read; judge it on that.
    judge = tick.analysis is not None and analysis_due(rollout, tick.now)
    observed = rollout.status.observed_generation
    if observed is not None and observed != rollout.generation:
        restart(
            d,
            "SpecChanged",
            "SpecChanged",
            f"spec changed (generation {observed} -> {rollout.generation}): starting again from the first step",
        )
        judge = False  # measured against the old spec
    d.set(observed_generation=rollout.generation)

    if judge:
        assert tick.analysis is not None
        _judge(d, tick.analysis)
    handle_intent(d)

    if d.status.phase is Phase.PENDING:
        _begin(d)  # and on: a rollout that just started says what it waits for, as a replay would
    if d.status.phase in _ACTIVE and not tick.router.reachable:
        d.note = d.note or (
            f"router unreachable ({tick.router.error or 'no answer'}): no step or promotion until it answers; "
            f"{_traffic(d)}"
        )
    elif d.status.phase is Phase.PROGRESSING:
        advance(d)
    elif d.status.phase is Phase.SUCCEEDED:
        _release_old_stable(d)

    if d.status.phase in (Phase.PENDING, *_ACTIVE):
        d.set(message=clip(d.note or _now_line(d)))
    d.set(conditions=_conditions(d))
    return Outcome(status=d.status, events=d.events, route=desired_route(rollout, d.status), requeue_after=_requeue(d))


def analysis_due(rollout: ModelRollout, now: datetime) -> bool:
    """True when the candidate takes (real, mirrored or preview) traffic, there are metrics to measure, and
    status.nextAnalysisAt <= now."""
    status = rollout.status
    return (
        bool(rollout.spec.analysis.metrics)
        and takes_traffic(rollout, status)
        and status.next_analysis_at is not None
        and status.next_analysis_at <= now
    )


def desired_route(rollout: ModelRollout, status: ModelRolloutStatus) -> DesiredRoute | None:
    """The route the router must hold for this spec and status; None: leave the router alone (not started,
    or refused)."""
    spec, stable = rollout.spec, status.stable_version
    if stable is None or status.phase in (Phase.PENDING, Phase.FAILED):
        return None
    route = DesiredRoute(stable_version=stable, stable_endpoint=_endpoint(spec, stable))
    strategy = spec.strategy
    if status.phase in _ACTIVE:
        route = replace(route, candidate_version=spec.candidate.version, candidate_endpoint=spec.candidate.endpoint)
        if strategy.type == "Canary":
            assert strategy.canary is not None
            sticky = strategy.canary.stickiness
            return replace(
                route,
                candidate_weight=float(status.candidate_weight),
                sticky_header=sticky.header if sticky else None,
                sticky_cookie=sticky.cookie if sticky else None,
            )
        if strategy.type == "BlueGreen":
            assert strategy.blue_green is not None
            return replace(route, preview_header=strategy.blue_green.preview_header)
        assert strategy.shadow is not None
        return replace(route, shadow_percent=float(strategy.shadow.mirror_percent))
    previous = status.previous_stable_version
    if status.phase is Phase.SUCCEEDED and status.old_stable_until is not None and previous not in (None, stable):
        # A blue-green switch keeps the old stable in the route at weight 0 (reachable by a pin) until
        # oldStableUntil, so an undo is instant; the reconcile that passes that time clears oldStableUntil.
        return replace(route, candidate_version=previous, candidate_endpoint=_endpoint(spec, previous))
    return route


def released_route(rollout: ModelRollout) -> DesiredRoute | None:
    """The route to leave when the rollout is deleted: a rollout that started and did not end gives all
    traffic back to its stable (candidate removed); otherwise None (leave the router alone)."""
    status = rollout.status
    if status.phase.is_terminal() or status.started_at is None or status.stable_version is None:
        return None
    stable = status.stable_version
    return DesiredRoute(stable_version=stable, stable_endpoint=_endpoint(rollout.spec, stable))


def _endpoint(spec: ModelRolloutSpec, version: str) -> str | None:
    """Where `version` is served, as the spec says (the promoted candidate keeps its endpoint as stable)."""
    if version == spec.candidate.version:
        return spec.candidate.endpoint
    if spec.stable is not None and version == spec.stable.version:
        return spec.stable.endpoint
    return None


# --------------------------------------------------------------------------------------------- phases


def _begin(d: Draft) -> None:
    """Pending: start when the router answers and a stable is known, refuse when it cannot run (a conflict, a
    candidate its gates rejected or that cannot be checked, no stable)."""
    tick, spec = d.tick, d.spec
    if tick.conflict is not None:
        fail(
            d,
            "ConflictingRollout",
            f"rollout {tick.conflict} already moves traffic of model {spec.model}; "
            "wait for it to end and retry, or delete one of them",
        )
        return
    gates = tick.candidate_gates
    if gates is not None and gates.verdict == "rejected":
        fail(
            d,
            "CandidateRejected",
            f"candidate {d.candidate} was published as rejected by its gates ({gates.reason}); a rejected version is "
            "never rolled out: train one that passes and set spec.candidate to it",
        )
        return
    if gates is not None and gates.verdict == "unverified":
        fail(
            d,
            "CandidateUnverified",
            f"candidate {d.candidate} cannot be checked against its gates ({gates.reason}); set spec.candidate to a "
            "version published in the model repository",
        )
        return
    if not tick.router.reachable:
        d.note = f"waiting for the router: {tick.router.error or 'no answer'}"
        return
    stable = spec.stable.version if spec.stable else (d.status.stable_version or tick.router.stable_version)
    if stable is None:
        fail(
            d,
            "NoStableVersion",
            f"no stable version: the router has no route for model {spec.model}; set spec.stable",
        )
        return
    if stable == d.candidate:
        fail(d, "CandidateIsStable", f"candidate {d.candidate} is already the stable; set a new spec.candidate")
        return
    start(d, stable)


def _judge(d: Draft, result: AnalysisResult) -> None:
    """Store the run and its evidence; roll back or pause when it says so."""
    run, limits = result.run, d.spec.analysis
    d.set(
        last_analysis=run,
        evidence=list(result.evidence),
        next_analysis_at=d.now + timedelta(seconds=limits.interval_seconds()),
    )
    if run.verdict is Verdict.FAILED and (run.decisive or run.consecutive_failures >= limits.failure_limit):
        failing = [m for m in run.metrics if m.verdict is Verdict.FAILED]
        why = "decisive evidence" if run.decisive else f"{run.consecutive_failures} failed analyses in a row"
        if d.spec.rollback.automatic:
            detail = "; ".join(f"{m.name}: {m.message}" if m.message else m.name for m in failing)
            roll_back(
                d,
                f"analysis failed ({why}): {detail or 'no metric named'}; all traffic on {d.status.stable_version}",
                verdict=Verdict.FAILED,
            )
        else:
            names = ", ".join(m.name for m in failing) or "the analysis"
            pause(d, f"analysis failed on {names} ({why}); rollback.automatic is false", verdict=Verdict.FAILED)
    elif run.consecutive_inconclusive >= limits.inconclusive_limit:
        unclear = [m for m in run.metrics if m.verdict in (Verdict.INCONCLUSIVE, Verdict.INSUFFICIENT_SAMPLES)]
        detail = ", ".join(f"{m.name} ({m.message or m.verdict.value})" for m in unclear) or run.verdict.value
        pause(d, f"{run.consecutive_inconclusive} inconclusive analyses in a row: {detail}", verdict=run.verdict)


def _release_old_stable(d: Draft) -> None:
    until = d.status.old_stable_until
    if until is None or d.now < until:
        return
    d.set(old_stable_until=None)
    d.record(
        "ReleaseOldStable",
        "OldStableReleased",
        f"{d.status.previous_stable_version} leaves the route: scaleDownDelay is over",
    )


# -------------------------------------------------------------------------------------- bookkeeping


def _traffic(d: Draft) -> str:
    strategy, candidate = d.spec.strategy, d.candidate
    if strategy.type == "BlueGreen":
        assert strategy.blue_green is not None
        return f"{candidate} previewed through header {strategy.blue_green.preview_header}"
    if strategy.type == "Shadow":
        assert strategy.shadow is not None
        return f"{strategy.shadow.mirror_percent}% of requests mirrored to {candidate}"
    return f"{candidate} at {d.status.candidate_weight}%"


def _now_line(d: Draft) -> str:
    status = d.status
    if status.phase is Phase.PAUSED:
        return f"paused: {status.paused_reason}; {_traffic(d)}"
    if status.phase is Phase.PROGRESSING and d.spec.strategy.type == "Canary":
        return f"step {status.current_step}: {_traffic(d)}"
    if status.phase is Phase.PROGRESSING:
        return _traffic(d)
    return "waiting to start"


ConditionStatus = Literal["True", "False", "Unknown"]


def _healthy(run: AnalysisRun | None) -> tuple[ConditionStatus, str, str]:
    if run is None:
        return "Unknown", "NoAnalysis", "no analysis yet"
    failing = ", ".join(m.name for m in run.metrics if m.verdict is not Verdict.SUCCESSFUL) or "no metric named"
    if run.verdict is Verdict.SUCCESSFUL:
        return "True", "AnalysisSuccessful", "every metric within its bound"
    if run.verdict is Verdict.FAILED:
        return "False", "AnalysisFailed", f"failing: {failing}"
    return "Unknown", f"Analysis{run.verdict.value}", f"not judged: {failing}"


def _conditions(d: Draft) -> list[Condition]:
    status, router = d.status, d.tick.router
    wanted: list[tuple[str, ConditionStatus, str, str]] = [
        (
            "Progressing",
            "True" if status.phase is Phase.PROGRESSING else "False",
            status.phase.value,
            status.message or status.phase.value,
        ),
        ("Healthy", *_healthy(status.last_analysis)),
        (
            "RouterReachable",
            "True" if router.reachable else "False",
            "RouterAnswered" if router.reachable else "RouterUnreachable",
            "the router answered" if router.reachable else (router.error or "no answer"),
        ),
    ]
    old = {c.type: c for c in status.conditions}
    ours = []
    for kind, state, reason, message in wanted:
        before = old.get(kind)
        # lastTransitionTime moves only when the condition's status does (the Kubernetes convention).
        since = before.last_transition_time if before is not None and before.status == state else d.now
        ours.append(
            Condition(
                type=kind,
                status=state,
                reason=reason,
                message=clip(message, _CONDITION_MESSAGE_MAX),
                # By alias: the model's config is a shared dict that mypy's pydantic plugin cannot read.
                lastTransitionTime=since,
                observed_generation=d.rollout.generation,
            )
        )
    others = [c for c in status.conditions if c.type not in {kind for kind, *_ in wanted}]
    return ours + others


def _requeue(d: Draft) -> float:
    """Seconds until the next thing to do: a move, an analysis, the old stable's release."""
    status, now = d.status, d.now
    waits: list[float] = []
    if status.phase is Phase.PENDING or (status.phase in _ACTIVE and not d.tick.router.reachable):
        waits.append(_REQUEUE_MAX)
    elif status.phase is Phase.PROGRESSING:
        move = next_move_in(d)
        if move is not None:
            waits.append(move)
    if analysis_due_at := _analysis_at(d):
        waits.append((analysis_due_at - now).total_seconds())
    if status.phase is Phase.SUCCEEDED and status.old_stable_until is not None:
        waits.append((status.old_stable_until - now).total_seconds())
    return min(max(min(waits, default=_REQUEUE_MAX), _REQUEUE_MIN), _REQUEUE_MAX)


def _analysis_at(d: Draft) -> datetime | None:
    if not d.spec.analysis.metrics or not takes_traffic(d.rollout, d.status):
        return None
    return d.status.next_analysis_at
