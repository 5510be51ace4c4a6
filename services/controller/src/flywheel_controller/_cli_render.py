"""What `kubectl flywheel` prints: ModelRollouts (flywheel_contracts models) in, aligned text out.

Pure on purpose: no kubectl, no clock, no terminal. The caller passes `now` (so "12s ago" is testable) and
`color` (True only when stdout is a TTY and NO_COLOR is unset), and these functions return the text. Columns
are padded on the plain text and painted afterwards, so escape codes never throw the alignment off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from flywheel_contracts import IntentAction, ModelRollout, Phase, Verdict

_RESET = "\x1b[0m"
_BOLD, _DIM, _RED, _GREEN, _YELLOW, _CYAN = "1", "2", "31", "32", "33", "36"

_PHASE_COLOUR = {
    Phase.PENDING.value: _DIM,
    Phase.PROGRESSING.value: _CYAN,
    Phase.PAUSED.value: _YELLOW,
    Phase.SUCCEEDED.value: _GREEN,
    Phase.ROLLED_BACK.value: _RED,
    Phase.ABORTED.value: _RED,
    Phase.FAILED.value: _RED,
}
_VERDICT_COLOUR = {
    Verdict.SUCCESSFUL.value: _GREEN,
    Verdict.FAILED.value: _RED,
    Verdict.INCONCLUSIVE.value: _YELLOW,
    Verdict.INSUFFICIENT_SAMPLES.value: _YELLOW,
}
_CONDITION_COLOUR = {"True": _GREEN, "False": _RED, "Unknown": _YELLOW}

Painter = Callable[[str], "str | None"]
"""Given a cell's plain text, the SGR code to paint it with (None: leave it plain)."""


# ------------------------------------------------------------------------------------------------ times


def span(seconds: float) -> str:
    """A duration the way kubectl's AGE column writes it: 45s, 3m20s, 25m, 4h10m, 30h, 3d4h, 12d."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 600:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if s < 3 * 3600:
        return f"{m}m"
    if s < 8 * 3600:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if s < 48 * 3600:
        return f"{h}h"
    if s < 8 * 86400:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def relative(when: datetime | None, now: datetime) -> str:
    """`12s ago` for the past, `in 30s` for the future, `-` when unknown."""
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    # A second of clock skew between the API server and this machine should not read as "in 0s".
    if seconds >= -1:
        return f"{span(seconds)} ago"
    return f"in {span(-seconds)}"


# ------------------------------------------------------------------------------------------------ cells


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def _p_value(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()) or "-"


def _paint(text: str, code: str | None, color: bool) -> str:
    return f"\x1b[{code}m{text}{_RESET}" if color and code else text


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    color: bool = False,
    painters: dict[int, Painter] | None = None,
    indent: str = "",
) -> list[str]:
    """Rows under upper-case headers, columns two spaces apart, the last column unpadded (no trailing
    blanks). `painters` colours cells by column index; headers are dimmed rather than coloured."""
    painters = painters or {}
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(cells: Sequence[str], header: bool) -> str:
        parts = []
        for i, cell in enumerate(cells):
            padded = cell if i == last else cell.ljust(widths[i])
            code = _DIM if header else (painters[i](cell) if i in painters else None)
            parts.append(_paint(padded, code, color))
        return (indent + "  ".join(parts)).rstrip()

    return [line([h.upper() for h in headers], True), *(line(r, False) for r in rows)]


# ------------------------------------------------------------------------------------------------- list


def _step_label(rollout: ModelRollout) -> str:
    status, canary = rollout.status, rollout.spec.strategy.canary
    if status.current_step:
        return status.current_step
    if canary is not None and status.phase is not Phase.PENDING:
        index = min(status.current_step_index, len(canary.steps) - 1)
        return f"{index + 1}/{len(canary.steps)}"
    return "-"


def render_list(
    rollouts: Sequence[ModelRollout], now: datetime, *, color: bool = False, namespaces: bool = False
) -> str:
    """`kubectl flywheel list`: one row per rollout, the columns an operator scans first."""
    if not rollouts:
        return "No ModelRollouts found."
    headers = ["name", "model", "strategy", "stable", "candidate", "weight", "step", "phase", "verdict", "age"]
    rows = []
    for r in sorted(rollouts, key=lambda r: (r.namespace, r.name)):
        stable = r.status.stable_version or (r.spec.stable.version if r.spec.stable else None)
        analysis = r.status.last_analysis
        row = [
            r.name,
            r.spec.model,
            r.spec.strategy.type,
            stable or "-",
            r.spec.candidate.version,
            f"{r.status.candidate_weight}%",
            _step_label(r),
            r.status.phase.value,
            analysis.verdict.value if analysis else "-",
            span((now - r.creation_timestamp).total_seconds()) if r.creation_timestamp else "-",
        ]
        rows.append([r.namespace, *row] if namespaces else row)
    offset = 1 if namespaces else 0
    painters: dict[int, Painter] = {7 + offset: _PHASE_COLOUR.get, 8 + offset: _VERDICT_COLOUR.get}
    return "\n".join(table(["namespace", *headers] if namespaces else headers, rows, color=color, painters=painters))


# ----------------------------------------------------------------------------------------------- status


_LABEL_WIDTH = len("Previous stable:") + 2


def _header(rollout: ModelRollout, now: datetime, color: bool) -> list[str]:
    spec, status = rollout.spec, rollout.status
    stable = status.stable_version or (spec.stable.version if spec.stable else "(the router's current version)")
    phase = _paint(status.phase.value, _PHASE_COLOUR.get(status.phase.value), color)
    if status.phase is Phase.PAUSED and status.paused_reason:
        phase += f" ({_one_line(status.paused_reason)})"
    fields: list[tuple[str, str]] = [
        ("Name", rollout.name),
        ("Namespace", rollout.namespace),
        ("Model", spec.model),
        ("Strategy", spec.strategy.type),
        ("Phase", phase),
        ("Message", _one_line(status.message)),
        ("Versions", f"{stable} (stable) -> {spec.candidate.version} (candidate)"),
        ("Weight", f"{status.candidate_weight}% to the candidate"),
    ]
    if spec.strategy.shadow is not None:
        shadow = spec.strategy.shadow
        fields.append(("Shadow", f"{shadow.mirror_percent}% of requests mirrored for {shadow.duration}"))
    if spec.strategy.blue_green is not None:
        fields.append(("Preview", f"header {spec.strategy.blue_green.preview_header}"))
    if status.started_at:
        fields.append(("Started", relative(status.started_at, now)))
    if status.finished_at:
        fields.append(("Finished", relative(status.finished_at, now)))
    elif status.next_analysis_at and not status.phase.is_terminal():
        fields.append(("Next analysis", relative(status.next_analysis_at, now)))
    if status.old_stable_until and status.old_stable_until > now:
        fields.append(("Old stable kept", f"until {relative(status.old_stable_until, now)}"))
    if status.previous_stable_version:
        fields.append(("Previous stable", f"{status.previous_stable_version} (what undo returns to)"))
    # One width for every rollout, so the values do not jump sideways when --watch adds a field.
    return [f"{(k + ':').ljust(_LABEL_WIDTH)}{v}" for k, v in fields]


def _steps(rollout: ModelRollout, now: datetime, color: bool) -> list[str]:
    canary, status = rollout.spec.strategy.canary, rollout.status
    if canary is None:
        return []
    done_all = status.phase is Phase.SUCCEEDED
    current = None if status.phase is Phase.PENDING or done_all else status.current_step_index
    lines = ["Steps:"]
    for i, step in enumerate(canary.steps):
        if i == current:
            since = f", since {relative(status.step_started_at, now)}" if status.step_started_at else ""
            mark, note = ">", _paint(f"current{since}", _BOLD, color)
        elif done_all or (current is not None and i < current):
            mark, note = " ", "done"
        else:
            mark, note = " ", ""
        lines.append(f"  {mark} {i + 1:>2}  {step.describe().ljust(24)}  {note}".rstrip())
    return lines


def _analysis(rollout: ModelRollout, now: datetime, color: bool) -> list[str]:
    run = rollout.status.last_analysis
    if run is None:
        return ["Last analysis: none yet"]
    step = f" at step {run.step + 1}" if run.step is not None else ""
    verdict = _paint(run.verdict.value, _VERDICT_COLOUR.get(run.verdict.value), color)
    decisive = ", decisive" if run.decisive else ""
    head = (
        f"Last analysis: {verdict}{step}, {relative(run.time, now)}{decisive} "
        f"(failed in a row: {run.consecutive_failures}, inconclusive in a row: {run.consecutive_inconclusive})"
    )
    rows = [
        [
            m.name,
            m.verdict.value,
            _number(m.value),
            _number(m.stable_value),
            f"{m.samples}/{m.stable_samples}" if m.stable_samples else str(m.samples),
            _p_value(m.p_value),
            _one_line(m.message),
        ]
        for m in run.metrics
    ]
    if not rows:
        return [head]
    headers = ["metric", "verdict", "value", "stable", "samples", "p-value", "message"]
    return [head, *table(headers, rows, color=color, painters={1: _VERDICT_COLOUR.get}, indent="  ")]


def _decisions(rollout: ModelRollout, now: datetime, color: bool) -> list[str]:
    decisions = rollout.status.decisions
    if not decisions:
        return ["Decisions: none yet"]
    rows = [
        [
            relative(d.time, now),
            str(d.step + 1) if d.step is not None else "-",
            d.action,
            d.verdict.value if d.verdict else "-",
            f"{d.weight}%" if d.weight is not None else "-",
            _one_line(d.message),
        ]
        for d in decisions
    ]
    headers = ["time", "step", "action", "verdict", "weight", "message"]
    return ["Decisions:", *table(headers, rows, color=color, painters={3: _VERDICT_COLOUR.get}, indent="  ")]


def _conditions(rollout: ModelRollout, now: datetime, color: bool) -> list[str]:
    conditions = rollout.status.conditions
    if not conditions:
        return []
    rows = [
        [c.type, c.status, c.reason, relative(c.last_transition_time, now), _one_line(c.message)]
        for c in conditions
    ]
    headers = ["type", "status", "reason", "since", "message"]
    return ["Conditions:", *table(headers, rows, color=color, painters={1: _CONDITION_COLOUR.get}, indent="  ")]


def render_status(rollout: ModelRollout, now: datetime, *, color: bool = False) -> str:
    """`kubectl flywheel status NAME`: header, steps (canary), last analysis, decisions, conditions."""
    sections = [
        _header(rollout, now, color),
        _steps(rollout, now, color),
        _analysis(rollout, now, color),
        _decisions(rollout, now, color),
        _conditions(rollout, now, color),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s)


def render_outcome(rollout: ModelRollout, action: IntentAction, *, color: bool = False) -> str:
    """One line after the controller handled an intent: where the rollout now stands and why."""
    status = rollout.status
    phase = _paint(status.phase.value, _PHASE_COLOUR.get(status.phase.value), color)
    weight = f"{status.candidate_weight}% to {rollout.spec.candidate.version}"
    line = f"{action.value} {rollout.name}: handled; {phase}, {weight}"
    newest = status.decisions[-1].message if status.decisions else status.message
    return f"{line}: {_one_line(newest)}" if newest else line
