"""The moves of the rollout state machine and how each strategy goes forward, on one reconcile's draft.

`_engine.reconcile` makes a `Draft` of the status, lets the analysis, a person's intent and the strategy
move it, and turns it into an Outcome. Every move here that changes the phase or the traffic records one
decision and one Event, so `status.decisions` and the Events tell the same story.

One rule keeps a replayed reconcile harmless: a strategy moves at most once per instant. A move stamps
`stepStartedAt = now`, and no step runs while `stepStartedAt >= now`; so reconciling the status just
written with the same tick (a controller killed before it wrote the route, a write retried after a
conflict) finds nothing to do: no second step, no weight jump, no second promotion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flywheel_contracts import (
    DecisionRecord,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    Step,
    Verdict,
    parse_duration,
)
from flywheel_contracts.rollout import DECISIONS_KEPT

from ._types import Event, Tick

_MESSAGE_MAX = 1024  # status.message and status.pausedReason (the CRD's maxLength)
_DECISION_MAX = 2048  # status.decisions[].message


def clip(text: str, limit: int = _MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Draft:
    """One reconcile's scratchpad: the status being decided, the Events to post, and what happens now.

    `note` is the one-line message for a phase that is still moving (a terminal move writes its message
    into the status itself, where it stays)."""

    rollout: ModelRollout
    tick: Tick
    status: ModelRolloutStatus
    events: list[Event] = field(default_factory=list)
    note: str | None = None

    @property
    def now(self) -> datetime:
        return self.tick.now

    @property
    def spec(self) -> ModelRolloutSpec:
        return self.rollout.spec

    @property
    def candidate(self) -> str:
        return self.rollout.spec.candidate.version

    def set(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def record(
        self,
        action: str,
        reason: str,
        message: str,
        *,
        step: int | None = None,
        verdict: Verdict | None = None,
        warning: bool = False,
    ) -> None:
        """One decision in status and one Event (model_copy skips the model's bounding validator, so the
        decisions are trimmed to DECISIONS_KEPT here)."""
        decision = DecisionRecord(
            time=self.now,
            step=self.status.current_step_index if step is None else step,
            action=action,
            verdict=verdict,
            weight=self.status.candidate_weight,
            message=clip(message, _DECISION_MAX),
        )
        self.set(decisions=[*self.status.decisions, decision][-DECISIONS_KEPT:])
        self.events.append(Event(reason=reason, message=clip(message), type="Warning" if warning else "Normal"))


# ------------------------------------------------------------------------------------------ positions


def takes_traffic(rollout: ModelRollout, status: ModelRolloutStatus) -> bool:
    """Whether the candidate sees requests now: real (a canary weight), previewed or mirrored."""
    if status.phase not in (Phase.PROGRESSING, Phase.PAUSED) or status.started_at is None:
        return False
    return rollout.spec.strategy.type != "Canary" or status.candidate_weight > 0


def step_label(spec: ModelRolloutSpec, index: int) -> str:
    """status.currentStep: "i/n <step>" for a canary (1-based, as people count), the phase of the others."""
    strategy = spec.strategy
    if strategy.type == "Canary":
        assert strategy.canary is not None
        steps = strategy.canary.steps
        if index >= len(steps):
            return f"{len(steps)}/{len(steps)} done: promote"
        return f"{index + 1}/{len(steps)} {steps[index].describe()}"
    if strategy.type == "BlueGreen":
        assert strategy.blue_green is not None
        return f"preview {strategy.blue_green.preview_duration}"
    assert strategy.shadow is not None
    return f"shadow {strategy.shadow.mirror_percent}% for {strategy.shadow.duration}"


def canary_step(spec: ModelRolloutSpec, index: int) -> Step | None:
    if spec.strategy.canary is None or index >= len(spec.strategy.canary.steps):
        return None
    return spec.strategy.canary.steps[index]


def open_pause_reason(spec: ModelRolloutSpec, index: int) -> str:
    """The pausedReason of a rollout that waits for `promote` (an open pause step, a blue-green preview
    without autoPromote); an intent handler compares against it to tell that wait from other pauses."""
    if spec.strategy.type == "Canary":
        assert spec.strategy.canary is not None
        return f"step {index + 1}/{len(spec.strategy.canary.steps)} waits for promote"
    return "preview passed; waits for promote"


def waits_for_promote(d: Draft) -> bool:
    return d.status.phase is Phase.PAUSED and d.status.paused_reason == open_pause_reason(
        d.spec, d.status.current_step_index
    )


def _until(when: datetime) -> str:
    return when.strftime("%H:%M:%S")


# ---------------------------------------------------------------------------------------------- moves


def enter_step(d: Draft, index: int) -> None:
    d.set(current_step_index=index, current_step=step_label(d.spec, index), step_started_at=d.now)


def start(d: Draft, stable: str) -> None:
    interval = timedelta(seconds=d.spec.analysis.interval_seconds())
    d.set(
        phase=Phase.PROGRESSING,
        stable_version=stable,
        candidate_weight=0,
        started_at=d.now,
        finished_at=None,
        paused_reason=None,
        next_analysis_at=d.now + interval,
    )
    enter_step(d, 0)
    d.record("Start", "Started", f"{d.spec.strategy.type} of {d.candidate} beside stable {stable} started")


def restart(d: Draft, action: str, reason: str, message: str) -> None:
    """Back to Pending: evidence, counters and the step cleared; the stable and the decisions kept."""
    d.set(
        phase=Phase.PENDING,
        message=None,
        candidate_weight=0,
        current_step_index=0,
        current_step=None,
        step_started_at=None,
        started_at=None,
        finished_at=None,
        paused_reason=None,
        next_analysis_at=None,
        old_stable_until=None,
        last_analysis=None,
        evidence=[],
    )
    d.record(action, reason, message, step=0)


def pause(d: Draft, reason: str, *, verdict: Verdict | None = None) -> None:
    """Hold the current weight. Already paused: only the reason is brought up to date (no new Event)."""
    if d.status.phase is Phase.PAUSED:
        d.set(paused_reason=clip(reason))
        return
    d.set(phase=Phase.PAUSED, paused_reason=clip(reason))
    d.record("Pause", "Paused", f"paused: {reason}", verdict=verdict)


def clear_counters(d: Draft) -> None:
    """Forget the consecutive failures/inconclusive runs (the analysis counts on from lastAnalysis), so a
    rollout a person resumed is not paused again by the same streak."""
    run = d.status.last_analysis
    if run is not None:
        d.set(last_analysis=run.model_copy(update={"consecutive_failures": 0, "consecutive_inconclusive": 0}))


def unpause(d: Draft) -> None:
    d.set(phase=Phase.PROGRESSING, paused_reason=None)
    clear_counters(d)


def _finish(d: Draft, phase: Phase, message: str, **changes: Any) -> None:
    d.set(
        phase=phase,
        message=clip(message),
        finished_at=d.now,
        paused_reason=None,
        next_analysis_at=None,
        **changes,
    )


def succeed(d: Draft, message: str, *, promote: bool = True, old_stable_until: datetime | None = None) -> None:
    """End well; `promote`: the candidate becomes the stable (weight shown as 100), the old one kept as
    previousStableVersion for undo."""
    if promote:
        changes: dict[str, Any] = {
            "stable_version": d.candidate,
            "previous_stable_version": d.status.stable_version,
            "candidate_weight": 100,
            "old_stable_until": old_stable_until,
        }
    else:
        changes = {"candidate_weight": 0}
    verdict = d.status.last_analysis.verdict if d.status.last_analysis else None
    _finish(d, Phase.SUCCEEDED, message, current_step="done", **changes)
    d.record("Succeed", "Succeeded", message, verdict=verdict)


def roll_back(d: Draft, message: str, *, verdict: Verdict | None = None) -> None:
    _finish(d, Phase.ROLLED_BACK, message, candidate_weight=0)
    d.record("Rollback", "RolledBack", message, verdict=verdict, warning=True)


def abort(d: Draft, message: str) -> None:
    _finish(d, Phase.ABORTED, message, candidate_weight=0)
    d.record("Abort", "Aborted", message, warning=True)


def fail(d: Draft, reason: str, message: str) -> None:
    """The rollout cannot run; the router is left as it is."""
    _finish(d, Phase.FAILED, message)
    d.record("Fail", reason, message, warning=True)


# ------------------------------------------------------------------------------------------ strategies


def _verdict_gate(d: Draft) -> str | None:
    """None when a timed wait may end on the evidence: no metrics, a candidate that takes no traffic
    (nothing could judge it), or a Successful analysis since the step began; else what is missing."""
    if not d.spec.analysis.metrics or not takes_traffic(d.rollout, d.status):
        return None
    run, since = d.status.last_analysis, d.status.step_started_at
    # Strictly after the step began: a run stamped at the very instant the step began measured the step before.
    if run is None or since is None or run.time <= since:
        return "no analysis in this step yet"
    if run.verdict is not Verdict.SUCCESSFUL:
        return f"latest verdict {run.verdict.value}"
    return None


def _timed_wait(d: Draft, seconds: float, holding: str, held: bool) -> bool:
    """True when a wait of `seconds` from stepStartedAt is over and the verdict lets it end; else sets the
    note saying what it waits for."""
    assert d.status.step_started_at is not None
    ends = d.status.step_started_at + timedelta(seconds=seconds)
    if held or d.now < ends:
        d.note = f"{holding} until {_until(ends)}"
        return False
    missing = _verdict_gate(d)
    if missing is not None:
        d.note = f"{holding}: time is up, waiting for a Successful analysis ({missing})"
        return False
    return True


def advance(d: Draft) -> None:
    """Take the strategy's next move, if one is due (Progressing, router reachable)."""
    strategy = {"Canary": _advance_canary, "BlueGreen": _advance_blue_green, "Shadow": _advance_shadow}[
        d.spec.strategy.type
    ]
    since = d.status.step_started_at
    moves = len(d.events)
    strategy(d, since is not None and since >= d.now)  # held: moved at this instant already
    if len(d.events) > moves and d.status.phase is Phase.PROGRESSING:
        # Say what the new step waits for, as the replay of this tick (held) will: the same message.
        strategy(d, True)


def _advance_canary(d: Draft, held: bool) -> None:
    assert d.spec.strategy.canary is not None
    index, count = d.status.current_step_index, len(d.spec.strategy.canary.steps)
    step = canary_step(d.spec, index)
    if held and (step is None or step.pause is None or step.pause.seconds() is None):
        return
    if step is None:
        succeed(d, f"all {count} steps passed: {d.candidate} is the stable")
        return
    if step.set_weight is not None:
        if d.status.candidate_weight == 0 and step.set_weight > 0:
            # The candidate starts taking traffic now: its first interval is measured from here.
            interval = timedelta(seconds=d.spec.analysis.interval_seconds())
            d.set(next_analysis_at=d.now + interval)
        d.set(candidate_weight=step.set_weight)
        d.record("SetWeight", "SetWeight", f"step {index + 1}/{count}: {d.candidate} takes {step.set_weight}%")
        enter_step(d, index + 1)
        return
    assert step.pause is not None
    seconds = step.pause.seconds()
    if seconds is None:
        pause(d, open_pause_reason(d.spec, index))
        return
    holding = f"step {index + 1}/{count}: holding {d.candidate} at {d.status.candidate_weight}%"
    if _timed_wait(d, seconds, holding, held):
        verdict = d.status.last_analysis.verdict if d.status.last_analysis else None
        d.record("PauseEnded", "PauseEnded", f"step {index + 1}/{count} {step.describe()} over", verdict=verdict)
        enter_step(d, index + 1)


def switch(d: Draft, message: str) -> None:
    """Blue-green: all traffic to the candidate at once; the old stable stays routable until
    oldStableUntil, so an undo within scaleDownDelay is instant."""
    assert d.spec.strategy.blue_green is not None
    delay = parse_duration(d.spec.strategy.blue_green.scale_down_delay)
    succeed(d, message, old_stable_until=d.now + timedelta(seconds=delay) if delay > 0 else None)


def _advance_blue_green(d: Draft, held: bool) -> None:
    blue_green = d.spec.strategy.blue_green
    assert blue_green is not None
    holding = f"previewing {d.candidate} through header {blue_green.preview_header}"
    if not _timed_wait(d, parse_duration(blue_green.preview_duration), holding, held):
        return
    if blue_green.auto_promote:
        switch(d, f"preview passed: {d.candidate} takes all traffic")
    else:
        pause(d, open_pause_reason(d.spec, d.status.current_step_index))


def _advance_shadow(d: Draft, held: bool) -> None:
    shadow = d.spec.strategy.shadow
    assert shadow is not None
    holding = f"mirroring {shadow.mirror_percent}% of requests to {d.candidate}"
    if not _timed_wait(d, parse_duration(shadow.duration), holding, held):
        return
    if shadow.promote:
        succeed(d, f"shadow verdict passed: {d.candidate} is the stable")
    else:
        succeed(d, "shadow verdict passed; stable unchanged (promote: false)", promote=False)


def next_move_in(d: Draft) -> float | None:
    """Seconds until the strategy's next move is due (0: now), None when it waits on no clock."""
    status = d.status
    since = status.step_started_at
    if status.phase is not Phase.PROGRESSING or since is None:
        return None
    if d.spec.strategy.type == "Canary":
        step = canary_step(d.spec, status.current_step_index)
        if step is None or step.set_weight is not None or step.pause is None or step.pause.seconds() is None:
            return 0.0
        seconds = step.pause.seconds() or 0.0
    elif d.spec.strategy.type == "BlueGreen":
        assert d.spec.strategy.blue_green is not None
        seconds = parse_duration(d.spec.strategy.blue_green.preview_duration)
    else:
        assert d.spec.strategy.shadow is not None
        seconds = parse_duration(d.spec.strategy.shadow.duration)
    left = (since + timedelta(seconds=seconds) - d.now).total_seconds()
    return left if left > 0 else None  # over: what it waits for now is a verdict (the analysis clock)
