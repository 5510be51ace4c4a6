"""A person's requests (`status.intent`, written by `kubectl flywheel`) turned into moves of the draft.

Each intent is handled once: its id goes to `status.intentHandled`, with a decision saying what it did. An
intent that does not fit the phase is recorded as Ignored with the reason (the CLI checks first; this is
the last line). One exception to "once": a promote while the router does not answer is left waiting
(not marked handled), because promoting moves traffic the controller could not move; it runs when the
router is back. Abort, undo and pause are taken at once: they only take traffic away from the candidate.
"""

from __future__ import annotations

from collections.abc import Callable

from flywheel_contracts import Intent, IntentAction, Phase

from ._steps import (
    Draft,
    abort,
    canary_step,
    enter_step,
    pause,
    restart,
    roll_back,
    succeed,
    switch,
    unpause,
    waits_for_promote,
)

_ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)


def handle_intent(d: Draft) -> None:
    intent = d.status.intent
    if intent is None or intent.id == d.status.intent_handled:
        return
    if intent.action is IntentAction.PROMOTE and d.status.phase in _ACTIVE and not d.tick.router.reachable:
        d.note = f"promote {intent.id} waits for the router ({d.tick.router.error or 'unreachable'})"
        return
    d.set(intent_handled=intent.id)
    refusal = _HANDLERS[intent.action](d, intent)
    if refusal is not None:
        d.record("Ignored", "Refused", f"{intent.action.value} ({intent.id}) ignored: {refusal}")


def _promote(d: Draft, intent: Intent) -> str | None:
    phase = d.status.phase
    if phase not in _ACTIVE:
        return f"the rollout is {phase.value}; only a running rollout can be promoted"
    strategy = d.spec.strategy.type
    if intent.full:
        d.record("Promote", "Promoted", f"promoted by a person ({intent.id}): {d.candidate} takes all traffic now")
        if strategy == "BlueGreen":
            switch(d, f"promoted by a person: {d.candidate} takes all traffic")
        else:
            succeed(d, f"promoted by a person: {d.candidate} is the stable")
        return None
    if strategy == "BlueGreen":
        # Leaving the preview is the switch.
        d.record("Promote", "Promoted", f"promoted by a person ({intent.id}): preview ends")
        switch(d, f"promoted by a person: {d.candidate} takes all traffic")
        return None
    step = canary_step(d.spec, d.status.current_step_index)
    at_pause_step = step is not None and step.pause is not None
    if phase is not Phase.PAUSED and not at_pause_step:
        where = "a shadow run has no pause" if strategy == "Shadow" else f"step {d.status.current_step} is no pause"
        return f"{where} to leave; promote --full makes {d.candidate} the stable now"
    if phase is Phase.PAUSED:
        unpause(d)
    if at_pause_step:
        enter_step(d, d.status.current_step_index + 1)
    d.record("Promote", "Promoted", f"promoted by a person ({intent.id}): going on")
    return None


def _abort(d: Draft, intent: Intent) -> str | None:
    if d.status.phase.is_terminal():
        return f"the rollout already ended ({d.status.phase.value})"
    stable = d.status.stable_version or "the stable"
    abort(d, f"aborted by a person ({intent.id}): all traffic on {stable}")
    return None


def _retry(d: Draft, intent: Intent) -> str | None:
    if d.status.phase not in (Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED):
        return f"the rollout is {d.status.phase.value}; only a RolledBack, Aborted or Failed rollout is retried"
    restart(d, "Retry", "Retried", f"retried by a person ({intent.id}): starting again from the first step")
    return None


def _undo(d: Draft, intent: Intent) -> str | None:
    previous = d.status.previous_stable_version
    if d.status.phase is not Phase.SUCCEEDED or previous is None:
        return "only a rollout that succeeded and replaced a stable can be undone"
    undone = d.status.stable_version
    d.set(stable_version=previous, previous_stable_version=None, old_stable_until=None)
    roll_back(d, f"undone by a person ({intent.id}): all traffic back on {previous} ({undone} was the stable)")
    return None


def _pause(d: Draft, intent: Intent) -> str | None:
    if d.status.phase is not Phase.PROGRESSING:
        return f"the rollout is {d.status.phase.value}; only a Progressing rollout can be paused"
    pause(d, f"paused by a person ({intent.id})")
    return None


def _resume(d: Draft, intent: Intent) -> str | None:
    if d.status.phase is not Phase.PAUSED:
        return f"the rollout is {d.status.phase.value}; only a Paused rollout can be resumed"
    if waits_for_promote(d):
        return f"{d.status.paused_reason}: use promote"
    unpause(d)
    d.record("Resume", "Resumed", f"resumed by a person ({intent.id})")
    return None


_HANDLERS: dict[IntentAction, Callable[[Draft, Intent], str | None]] = {
    IntentAction.PROMOTE: _promote,
    IntentAction.ABORT: _abort,
    IntentAction.RETRY: _retry,
    IntentAction.UNDO: _undo,
    IntentAction.PAUSE: _pause,
    IntentAction.RESUME: _resume,
}
