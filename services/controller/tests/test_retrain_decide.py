"""The RetrainPolicy decision: one run at a time, a person's request first, then cool-down, triggers, labels."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_contracts.drift import Alert, PerformanceResult, VersionReport
from flywheel_contracts.retrain import RetrainPolicy, Trigger
from flywheel_controller._retrain import Serving, decide, pr_auc_upper_bound

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SERVING = Serving("v3", trained_at=NOW - timedelta(days=3))


def policy(status: dict | None = None, **spec) -> RetrainPolicy:
    base = {"model": "fraud", "rolloutTemplate": {"spec": {"strategy": {"type": "Shadow"}}},
            "triggers": {"driftAlert": {}, "performance": {"minimum": 0.5, "minLabels": 100},
                         "schedule": {"every": "168h"}, "manual": True},
            "training": {"minNewLabels": 50}, "cooldown": "6h"}
    return RetrainPolicy.model_validate({"metadata": {"name": "fraud"}, "spec": {**base, **spec},
                                         "status": status or {}})


def report(labelled: int = 500, pr_auc: float | None = 0.7, rows: int = 400, alerts: list[tuple[str, float]] = (),
           positives: int = 200) -> VersionReport:
    performance = PerformanceResult.model_validate({
        "rows": rows, "positives": positives, "coverage": 0.5, "roc_auc": 0.9, "pr_auc": pr_auc, "ece": 0.01,
        "baseline": {}, "degraded": [], "status": "ok"})
    made = [Alert.model_validate({"model": "fraud", "version": "v3", "category": category, "detector":
                                  "window" if category == "data" else "performance", "at": at,
                                  **({"window": {"index": 1, "rows": 2000, "drifted": {}, "consecutive": 2}}
                                     if category == "data" else
                                     {"performance": performance.model_dump()})})
            for category, at in alerts]
    return VersionReport.model_construct(performance=performance, alerts=made, predictions_labelled=labelled)


def test_nothing_fires_on_a_healthy_fresh_version():
    decision = decide(policy(), NOW, SERVING, report())
    assert not decision.start and decision.reason == "no trigger fired"


def test_a_labelled_pr_auc_below_the_minimum_starts_a_run():
    decision = decide(policy(), NOW, SERVING, report(pr_auc=0.4))
    assert decision.start and decision.trigger is Trigger.PERFORMANCE
    assert "PR-AUC 0.400 (upper 95% bound 0.458) < 0.5" in decision.reason


@pytest.mark.parametrize(("pr_auc", "fires"), [(0.491, False), (0.329, True)])
def test_a_dip_the_labels_cannot_tell_from_noise_starts_nothing(pr_auc, fires):
    """make flywheel's runs, 2,000 labels with about 35 frauds: unchanged traffic dipped to 0.491 (noise: the gates
    then found no better model), concept drift took v1 to 0.329. The point estimate fired on both."""
    labels = report(pr_auc=pr_auc, rows=2000, positives=35)
    assert decide(policy(), NOW, SERVING, labels).start is fires
    point = {"minimum": 0.5, "minLabels": 100, "confidence": 0}
    point_policy = policy(triggers={"performance": point, "manual": True})
    assert decide(point_policy, NOW, SERVING, labels).start


@given(st.floats(0.01, 0.99), st.integers(1, 10_000), st.floats(0.5, 0.999))
def test_the_upper_bound_is_above_the_estimate_and_tightens_with_more_positives(pr_auc, positives, confidence):
    upper = pr_auc_upper_bound(pr_auc, positives, confidence)
    assert pr_auc - 1e-12 <= upper <= 1.0  # z = 0 at confidence 0.5: the estimate itself, up to rounding
    assert pr_auc_upper_bound(pr_auc, positives * 4, confidence) <= upper + 1e-12
    assert pr_auc_upper_bound(pr_auc, positives, 0.0) == pr_auc


def test_too_few_labels_to_judge_performance_is_no_trigger():
    assert not decide(policy(), NOW, SERVING, report(pr_auc=0.4, rows=50)).start


def test_a_drift_alert_raised_after_the_last_run_started_starts_one_and_an_older_one_does_not():
    last = {"lastRun": {"trigger": "Manual", "startedAt": (NOW - timedelta(days=1)).isoformat()}}
    fresh = report(alerts=[("data", (NOW - timedelta(hours=2)).timestamp())])
    stale = report(alerts=[("data", (NOW - timedelta(days=2)).timestamp())])
    assert decide(policy(last), NOW, SERVING, fresh).trigger is Trigger.DRIFT_ALERT
    assert not decide(policy(last), NOW, SERVING, stale).start


def test_only_the_listed_alert_categories_count():
    alert = report(alerts=[("performance", NOW.timestamp() - 60)])
    assert not decide(policy(triggers={"driftAlert": {"categories": ["data"]}}), NOW, SERVING, alert).start


def test_the_schedule_fires_once_the_serving_version_is_older_than_every():
    old = Serving("v3", trained_at=NOW - timedelta(days=8))
    assert decide(policy(), NOW, old, report()).trigger is Trigger.SCHEDULE


def test_one_run_at_a_time_even_for_a_person():
    for phase in ("Training", "Gating", "RollingOut"):
        decision = decide(policy({"phase": phase}), NOW, SERVING, report(pr_auc=0.1), manual_requested_at=NOW)
        assert not decision.start and "one at a time" in decision.reason


def test_the_cool_down_holds_automatic_triggers_and_says_until_when():
    last = {"lastRun": {"startedAt": (NOW - timedelta(hours=2)).isoformat()}}
    decision = decide(policy(last), NOW, SERVING, report(pr_auc=0.1))
    assert not decision.start and decision.eligible_at == NOW + timedelta(hours=4)


def test_a_persons_request_skips_the_cool_down_and_the_label_minimum_once():
    last = {"lastRun": {"startedAt": (NOW - timedelta(hours=2)).isoformat()}}
    asked = NOW - timedelta(minutes=1)
    decision = decide(policy(last), NOW, SERVING, report(labelled=0), manual_requested_at=asked)
    assert decision.start and decision.trigger is Trigger.MANUAL
    # The same request, once a run started after it, is spent.
    spent = {"lastRun": {"startedAt": NOW.isoformat()}}
    assert not decide(policy(spent), NOW + timedelta(hours=7), SERVING, report(), manual_requested_at=asked).start


def test_a_request_is_ignored_when_manual_triggers_are_off():
    off = policy(triggers={"performance": {"minimum": 0.5}, "manual": False})
    assert not decide(off, NOW, SERVING, report(), manual_requested_at=NOW).start


def test_a_trigger_waits_for_enough_new_labels():
    decision = decide(policy(), NOW, SERVING, report(pr_auc=0.4, labelled=10))
    assert not decision.start and "only 10 of 50 new labels" in decision.reason


@pytest.mark.parametrize("suspend", [True])
def test_a_suspended_policy_starts_nothing(suspend):
    assert not decide(policy(suspend=suspend), NOW, SERVING, report(pr_auc=0.1), manual_requested_at=NOW).start
