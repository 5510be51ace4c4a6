"""When a RetrainPolicy starts a retraining: the pure decision the reconciler will act on.

Given the policy (spec and status), the serving version's facts and the drift service's report for it, decide
whether to start a training run now, which trigger it answers, or why not and until when. The order of the
checks is the contract:

1. `spec.suspend` -> no.
2. A run is under way (status phase Training, Gating or RollingOut) -> no: at most one per model.
3. A person's request (`kubectl flywheel retrain`: the flywheel.dev/retrain-requested-at annotation, newer than
   the last run's start) with `triggers.manual` -> yes, Manual, past the cool-down and minNewLabels.
4. The cool-down since the last run's start has not passed -> no, eligible at its end.
5. The automatic triggers, first that fires: Performance (labelled PR-AUC below minimum on at least minLabels
   labels, with `confidence`: `pr_auc_upper_bound`), DriftAlert (an alert of a listed category raised after the
   last run started), Schedule (the
   serving version older than `every`).
6. A trigger fired but fewer than minNewLabels labels arrived since the serving version was trained -> no
   (retraining on what the last model already saw is wasted compute).

Pure: no clock, no I/O; the reconciler passes `now` and what it read. Nothing calls it yet: the reconciler
that starts trainer Jobs from it is the next step (issue 15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

from flywheel_contracts.drift import VersionReport
from flywheel_contracts.retrain import RetrainPolicy, Trigger


@dataclass(frozen=True)
class Serving:
    """The version serving now, as the reconciler found it."""

    version: str
    trained_at: datetime | None
    """Its training cut-off (metadata lineage.cutoff), or its creation time; None when unknown."""


@dataclass(frozen=True)
class Decision:
    start: bool
    trigger: Trigger | None
    reason: str
    eligible_at: datetime | None = None
    """With start False: the earliest time another decision could say yes (the cool-down's end), if known."""


def decide(policy: RetrainPolicy, now: datetime, serving: Serving | None, report: VersionReport | None,
           manual_requested_at: datetime | None = None) -> Decision:
    spec, status = policy.spec, policy.status
    if spec.suspend:
        return Decision(False, None, "suspended (spec.suspend)")
    if status.phase.busy():
        return Decision(False, None, f"a retraining is under way (phase {status.phase.value}); one at a time")
    last_start = status.last_run.started_at if status.last_run else None
    if (spec.triggers.manual and manual_requested_at is not None
            and (last_start is None or manual_requested_at > last_start)):
        return Decision(True, Trigger.MANUAL, f"requested at {manual_requested_at.isoformat()}")
    if last_start is not None and now < last_start + timedelta(seconds=spec.cooldown_s):
        until = last_start + timedelta(seconds=spec.cooldown_s)
        return Decision(False, None, f"cooling down until {until.isoformat()} (cooldown {spec.cooldown})", until)
    if serving is None:
        return Decision(False, None, "no serving version to compare with: nothing to retrain yet")
    fired = _fired(policy, now, serving, report, last_start)
    if fired is None:
        return Decision(False, None, "no trigger fired")
    trigger, why = fired
    labels = report.predictions_labelled if report is not None else 0
    if labels < spec.training.min_new_labels:
        return Decision(False, None, f"{trigger.value} fired ({why}) but only {labels} of "
                                     f"{spec.training.min_new_labels} new labels (training.minNewLabels) arrived")
    return Decision(True, trigger, why)


def pr_auc_upper_bound(pr_auc: float, positives: int, confidence: float) -> float:
    """One-sided upper confidence bound of a PR-AUC (average precision) from `positives` labelled positives: the
    logit interval of Boyd, Eng & Page (2013), logit(AP) + z / sqrt(positives * AP * (1 - AP)), which they found to
    cover well down to a few dozen positives. `confidence` 0 gives the point estimate itself; no positives or an
    AP of 0 or 1 gives no information, so the bound is 1 (never fires)."""
    if confidence <= 0:
        return pr_auc
    if positives <= 0 or not 0.0 < pr_auc < 1.0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    logit = math.log(pr_auc / (1.0 - pr_auc)) + z / math.sqrt(positives * pr_auc * (1.0 - pr_auc))
    return 1.0 / (1.0 + math.exp(-logit))


def _fired(policy: RetrainPolicy, now: datetime, serving: Serving, report: VersionReport | None,
           last_start: datetime | None) -> tuple[Trigger, str] | None:
    triggers = policy.spec.triggers
    if triggers.performance is not None and report is not None and report.performance is not None:
        perf, trigger = report.performance, triggers.performance
        if perf.pr_auc is not None and perf.rows >= trigger.min_labels:
            upper = pr_auc_upper_bound(perf.pr_auc, perf.positives, trigger.confidence)
            if upper < trigger.minimum:
                bound = f" (upper {trigger.confidence:.0%} bound {upper:.3f})" if trigger.confidence > 0 else ""
                return Trigger.PERFORMANCE, (f"{serving.version} labelled PR-AUC {perf.pr_auc:.3f}{bound} < "
                                             f"{trigger.minimum} on {perf.rows} labels, {perf.positives} positive")
    if triggers.drift_alert is not None and report is not None:
        since = last_start.timestamp() if last_start is not None else float("-inf")
        for alert in report.alerts:
            if alert.category.value in triggers.drift_alert.categories and alert.at > since:
                why = f"{alert.category.value} alert ({alert.detector.value}) on {serving.version}"
                return Trigger.DRIFT_ALERT, why
    if triggers.schedule is not None and serving.trained_at is not None:
        due = serving.trained_at + timedelta(seconds=triggers.schedule.every_s)
        if now >= due:
            why = f"{serving.version} trained {serving.trained_at.isoformat()}, every {triggers.schedule.every}"
            return Trigger.SCHEDULE, why
    return None
