"""What `kubectl flywheel` prints, on rollouts built from the contract models (no kubectl, a fixed clock)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from flywheel_contracts import (
    AnalysisRun,
    Condition,
    DecisionRecord,
    IntentAction,
    MetricResult,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    Verdict,
)
from flywheel_controller._cli_render import relative, render_list, render_outcome, render_status, span, table

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def canary_spec(model: str = "fraud", candidate: str = "v2") -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate({
        "model": model,
        "stable": {"version": "v1"},
        "candidate": {"version": candidate},
        "strategy": {"type": "Canary", "canary": {"steps": [
            {"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "5m"}},
        ]}},
        "analysis": {"metrics": [{"name": "error-rate", "provider": "router", "metric": "error_rate", "max": 0.01}]},
    })


def rollout(name: str = "fraud-v2-canary", spec: ModelRolloutSpec | None = None, **status) -> ModelRollout:
    return ModelRollout(
        name=name,
        namespace="ml",
        creation_timestamp=ago(300),
        spec=spec or canary_spec(),
        status=ModelRolloutStatus(**status),
    )


@pytest.fixture
def progressing() -> ModelRollout:
    """A canary at its second step (an open pause) after one passing analysis and two moves."""
    return rollout(
        phase=Phase.PAUSED,
        message="waiting for promote at step 2/4",
        paused_reason="pause step: kubectl flywheel promote to go on",
        stable_version="v1",
        candidate_weight=10,
        current_step_index=1,
        current_step="2/4 pause",
        started_at=ago(240),
        step_started_at=ago(45),
        last_analysis=AnalysisRun(
            time=ago(30),
            step=0,
            verdict=Verdict.SUCCESSFUL,
            metrics=[
                MetricResult(name="error-rate", verdict=Verdict.SUCCESSFUL, value=0.0012, stable_value=0.001,
                             samples=1520, stable_samples=1498, p_value=0.0004, message="within bound"),
                MetricResult(name="latency-p99", verdict=Verdict.INSUFFICIENT_SAMPLES, value=None, samples=12,
                             message="12 of 100 samples"),
            ],
        ),
        decisions=[
            DecisionRecord(time=ago(240), step=0, action="SetWeight", weight=10, message="step 1/4: 10% to v2"),
            DecisionRecord(time=ago(12), step=1, action="Pause", verdict=Verdict.SUCCESSFUL, weight=10,
                           message="step 2/4: paused until promoted"),
        ],
        conditions=[
            Condition(type="Ready", status="True", reason="RouteApplied", message="the router holds the route",
                      last_transition_time=ago(240)),
        ],
    )


def test_times_read_relative_to_now_like_kubectl_ages():
    assert relative(ago(12), NOW) == "12s ago"
    assert relative(ago(200), NOW) == "3m20s ago"
    assert relative(ago(3 * 3600 + 120), NOW) == "3h2m ago"
    assert relative(NOW + timedelta(seconds=30), NOW) == "in 30s"
    assert relative(None, NOW) == "-"
    assert [span(s) for s in (45, 600, 30 * 3600, 3 * 86400 + 4 * 3600, 12 * 86400)] == ["45s", "10m", "30h", "3d4h", "12d"]


def test_a_second_of_clock_skew_still_reads_as_the_past():
    assert relative(NOW + timedelta(milliseconds=400), NOW) == "0s ago"


def test_table_aligns_columns_and_leaves_no_trailing_blanks():
    lines = table(["name", "phase", "message"], [["a", "Progressing", ""], ["longer-name", "Paused", "held"]])

    assert lines == [
        "NAME         PHASE        MESSAGE",
        "a            Progressing",
        "longer-name  Paused       held",
    ]


def test_colour_does_not_move_the_columns():
    rows = [["a", "Failed", "x"], ["bb", "Successful", "y"]]
    plain = table(["n", "verdict", "m"], rows)
    painted = table(["n", "verdict", "m"], rows, color=True, painters={1: lambda v: "31" if v == "Failed" else None})

    assert any("\x1b[31m" in line for line in painted)
    assert [ANSI.sub("", line) for line in painted] == plain


def test_list_shows_one_aligned_row_per_rollout(progressing):
    shadow = rollout(
        name="fraud-v3-shadow",
        spec=ModelRolloutSpec.model_validate({
            "model": "fraud", "candidate": {"version": "v3"}, "strategy": {"type": "Shadow"},
        }),
    )

    lines = render_list([shadow, progressing], NOW).splitlines()

    assert lines[0].split() == [
        "NAME", "MODEL", "STRATEGY", "STABLE", "CANDIDATE", "WEIGHT", "STEP", "PHASE", "VERDICT", "AGE",
    ]
    assert lines[1].split() == [
        "fraud-v2-canary", "fraud", "Canary", "v1", "v2", "10%", "2/4", "pause", "Paused", "Successful", "5m",
    ]
    assert lines[2].split() == ["fraud-v3-shadow", "fraud", "Shadow", "-", "v3", "0%", "-", "Pending", "-", "5m"]
    phase_column = lines[0].index("PHASE")
    assert lines[1][phase_column:].startswith("Paused") and lines[2][phase_column:].startswith("Pending")


def test_list_across_namespaces_adds_the_namespace_column(progressing):
    lines = render_list([progressing], NOW, namespaces=True).splitlines()

    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert lines[1].split()[:2] == ["ml", "fraud-v2-canary"]


def test_an_empty_namespace_says_so():
    assert render_list([], NOW) == "No ModelRollouts found."


def test_status_header_says_phase_versions_and_weight(progressing):
    text = render_status(progressing, NOW)

    assert "Model:            fraud" in text
    assert "Strategy:         Canary" in text
    assert "Phase:            Paused (pause step: kubectl flywheel promote to go on)" in text
    assert "Message:          waiting for promote at step 2/4" in text
    assert "Versions:         v1 (stable) -> v2 (candidate)" in text
    assert "Weight:           10% to the candidate" in text
    assert "Started:          4m ago" in text


def test_status_marks_the_current_step_and_the_ones_done(progressing):
    steps = render_status(progressing, NOW).split("Steps:\n")[1].split("\n\n")[0].splitlines()

    assert steps == [
        "     1  setWeight 10              done",
        "  >  2  pause (until promoted)    current, since 45s ago",
        "     3  setWeight 50",
        "     4  pause 5m",
    ]


def test_a_succeeded_canary_has_every_step_done_and_none_current(progressing):
    done = progressing.model_copy(update={"status": ModelRolloutStatus(phase=Phase.SUCCEEDED, current_step_index=4)})

    steps = render_status(done, NOW).split("Steps:\n")[1].split("\n\n")[0].splitlines()

    assert all(line.endswith("done") for line in steps)
    assert not any(line.lstrip().startswith(">") for line in steps)


def test_status_shows_the_last_analysis_as_a_table(progressing):
    text = render_status(progressing, NOW)
    section = text.split("Last analysis: ")[1].split("\n\n")[0].splitlines()

    assert section[0] == "Successful at step 1, 30s ago (failed in a row: 0, inconclusive in a row: 0)"
    assert section[1].split() == ["METRIC", "VERDICT", "VALUE", "STABLE", "SAMPLES", "P-VALUE", "MESSAGE"]
    assert section[2].split() == ["error-rate", "Successful", "0.0012", "0.001", "1520/1498", "<0.001", "within", "bound"]
    assert section[3].split() == ["latency-p99", "InsufficientSamples", "-", "-", "12", "-", "12", "of", "100", "samples"]
    assert section[1].index("SAMPLES") == section[2].index("1520/1498") == section[3].index("12 ")


def test_status_lists_decisions_oldest_first_with_relative_times(progressing):
    section = render_status(progressing, NOW).split("Decisions:\n")[1].split("\n\n")[0].splitlines()

    assert section[0].split() == ["TIME", "STEP", "ACTION", "VERDICT", "WEIGHT", "MESSAGE"]
    assert section[1].split()[:6] == ["4m", "ago", "1", "SetWeight", "-", "10%"]
    assert section[2].startswith("  12s ago")
    assert section[2].endswith("step 2/4: paused until promoted")


def test_status_shows_the_conditions(progressing):
    section = render_status(progressing, NOW).split("Conditions:\n")[1].splitlines()

    assert section[1].split() == ["Ready", "True", "RouteApplied", "4m", "ago", "the", "router", "holds", "the", "route"]


def test_a_new_rollout_says_nothing_has_happened_yet():
    text = render_status(rollout(), NOW)

    assert "Phase:            Pending" in text
    assert "(the router's current version)" not in text  # the spec names v1 as the stable
    assert "Last analysis: none yet" in text and "Decisions: none yet" in text
    assert ">" not in text.split("Steps:")[1]


def test_a_shadow_rollout_has_no_steps_and_says_what_it_mirrors():
    shadow = rollout(spec=ModelRolloutSpec.model_validate({
        "model": "fraud", "candidate": {"version": "v3"},
        "strategy": {"type": "Shadow", "shadow": {"mirrorPercent": 25, "duration": "1h"}},
    }))

    text = render_status(shadow, NOW)

    assert "Steps:" not in text
    assert "25% of requests mirrored for 1h" in text
    assert "(the router's current version) (stable) -> v3 (candidate)" in text


def test_no_colour_unless_asked_and_colour_when_asked(progressing):
    assert "\x1b[" not in render_status(progressing, NOW)
    assert "\x1b[" not in render_list([progressing], NOW)

    coloured = render_status(progressing, NOW, color=True)

    assert "\x1b[33mPaused\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == render_status(progressing, NOW)


def test_the_outcome_names_phase_weight_and_the_newest_decision(progressing):
    assert render_outcome(progressing, IntentAction.PROMOTE) == (
        "promote fraud-v2-canary: handled; Paused, 10% to v2: step 2/4: paused until promoted"
    )
