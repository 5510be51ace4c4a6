"""The RetrainPolicy loop: trigger -> trainer run -> published version -> gates -> ModelRollout -> verdict.

Level-triggered, one policy at a time, every `interval_s`; each step reads the world again and moves the policy's
status one phase on, so a controller restarted anywhere finishes the run it left:

- Idle: `_retrain.decide` says whether a trigger fires now. If one does, the run is written to status first
  (phase Training, `lastRun.job` named), then the trainer run is started. Written first so that a crash in between
  leaves a Training status whose Job is missing, and the next pass starts it under the same name; never two runs.
- Training: the run is followed. When it ended, the version it published is found by its name in the versions'
  lineage (`_gates_repo.published_by_run`). Gates rejected -> the run ends (CandidateRejected), no traffic. Gates
  passed -> the ModelRollout is built from the policy's template (model, stable = the serving version, candidate
  = the new one) and created; phase RollingOut. No version -> the run failed (TrainingFailed).
- RollingOut: the ModelRollout is followed to its terminal phase; its phase is the run's verdict.

Every step is an Event on the policy. Where the work happens is behind three small interfaces (`Runs`,
`Rollouts`, `PolicyStore`): a Job on the API server in a cluster, a subprocess and files locally.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from flywheel_contracts.drift import VersionReport
from flywheel_contracts.retrain import (
    HISTORY_KEPT,
    RetrainPhase,
    RetrainPolicy,
    RetrainPolicyStatus,
    RetrainRun,
)
from flywheel_contracts.rollout import GROUP, VERSION

from ._gates_repo import published_by_run, read_gates
from ._retrain import Decision, Serving, decide
from ._types import Event

log = logging.getLogger("flywheel.controller.retrain")

POLICY_LABEL = "flywheel.dev/retrainpolicy"
RUN_ANNOTATION = "flywheel.dev/retrain-run"
NAME_MAX = 63  # a Job's name becomes a pod label value: 63 characters at most


PUBLISH_GRACE_S = 60.0
"""How long after a run ended its version may take to show in the controller's view of the model repository (a
shared volume's attribute cache) before the run counts as having published nothing."""


@dataclass(frozen=True)
class RunState:
    state: Literal["missing", "running", "succeeded", "failed"]
    message: str = ""
    ended_at: datetime | None = None


class Runs(Protocol):
    """Where trainer runs happen: Jobs on the API server, or subprocesses."""

    async def start(self, policy: RetrainPolicy, name: str, env: dict[str, str]) -> None: ...

    async def state(self, policy: RetrainPolicy, name: str) -> RunState: ...


class Rollouts(Protocol):
    async def create(self, policy: RetrainPolicy, rollout: dict[str, Any]) -> None:
        """Create the ModelRollout; one that exists already under that name counts as created."""

    async def phase(self, policy: RetrainPolicy, name: str) -> tuple[str, str] | None:
        """(phase, message) of the ModelRollout, None when it does not exist."""


class PolicyStore(Protocol):
    async def list(self) -> list[RetrainPolicy]: ...

    async def write_status(self, policy: RetrainPolicy, status: RetrainPolicyStatus) -> RetrainPolicy: ...

    async def post_event(self, policy: RetrainPolicy, event: Event) -> None: ...


ServingSource = Callable[[str], Awaitable[Serving | None]]
"""The version serving `model` now (the router's stable), with its training cut-off; None when none is."""
ReportSource = Callable[[str, str], Awaitable[VersionReport | None]]
"""The drift service's report on (model, version); None when it has none or cannot be reached."""


def run_name(policy: RetrainPolicy, now: datetime) -> str:
    """`<policy>-<UTC time to the second>`: unique per policy (one run at a time, minutes long), sortable, and a
    valid Job name."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{policy.name[:NAME_MAX - len(stamp) - 1].rstrip('-.')}-{stamp}"


def trainer_env(policy: RetrainPolicy, run: RetrainRun, stable: str | None) -> dict[str, str]:
    """What the trainer run is told: who asked and why (lineage.run), what to beat (the serving version) and how
    (the policy's gates), and on which data (the sliding window)."""
    spec = policy.spec
    env = {
        "FLYWHEEL_TRAINER_MODEL": spec.model,
        "FLYWHEEL_TRAINER_IF_EMPTY": "false",
        "FLYWHEEL_TRAINER_RUN_ID": run.job or "",
        "FLYWHEEL_TRAINER_RUN_TRIGGER": run.trigger.value if run.trigger else "",
        "FLYWHEEL_TRAINER_RUN_REASON": (run.reason or "")[:1024],
        "FLYWHEEL_TRAINER_RUN_POLICY": policy.name,
        "FLYWHEEL_TRAINER_STABLE_VERSION": stable or "",
        "FLYWHEEL_TRAINER_WINDOW": spec.training.window,
        "FLYWHEEL_TRAINER_GATE_MIN_PR_AUC_GAIN": str(spec.gates.min_pr_auc_gain),
        "FLYWHEEL_TRAINER_GATE_CI_LEVEL": str(spec.gates.ci_level),
        "FLYWHEEL_TRAINER_GATE_MAX_ECE_INCREASE": str(spec.gates.max_ece_increase),
        "FLYWHEEL_TRAINER_GATE_MAX_SLICE_PR_AUC_DROP": str(spec.gates.max_slice_pr_auc_drop),
    }
    if spec.training.epochs is not None:
        env["FLYWHEEL_TRAINER_EPOCHS"] = str(spec.training.epochs)
    if spec.training.mode == "Stateful" and stable:
        # Fine-tune the serving version's weights on the window (the new data) instead of training from scratch.
        env["FLYWHEEL_TRAINER_WARM_START"] = stable
    return env


def rollout_object(policy: RetrainPolicy, run: RetrainRun, stable: str | None, candidate: str) -> dict[str, Any]:
    """The ModelRollout of a run: the policy's template with model, stable and candidate filled in, labelled with
    the policy and annotated with the run, owned by the policy (deleting the policy deletes its rollouts)."""
    template = policy.spec.rollout_template
    name = f"{policy.spec.model}-{candidate}"[:NAME_MAX]
    labels = {**(template.metadata.get("labels") or {}), POLICY_LABEL: policy.name}
    annotations = {**(template.metadata.get("annotations") or {}), RUN_ANNOTATION: run.job or ""}
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    uid = policy.metadata.get("uid")
    if uid:
        metadata["ownerReferences"] = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainPolicy",
                                        "name": policy.name, "uid": uid, "controller": True,
                                        "blockOwnerDeletion": False}]
    spec: dict[str, Any] = {**template.spec, "model": policy.spec.model, "candidate": {"version": candidate}}
    if stable is not None:
        spec["stable"] = {"version": stable}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": metadata, "spec": spec}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _ended(status: RetrainPolicyStatus, run: RetrainRun, phase: RetrainPhase, message: str) -> RetrainPolicyStatus:
    """The status once `run` ended: phase back to Idle (or Failed), the run appended to the history."""
    history = [*status.history, run.model_dump(mode="json", by_alias=True, exclude_none=True)][-HISTORY_KEPT:]
    return status.model_copy(update={"phase": phase, "message": message, "last_run": run, "history": history})


class Retrainer:
    def __init__(self, *, store: PolicyStore, runs: Runs, rollouts: Rollouts, serving: ServingSource,
                 reports: ReportSource, model_repo_path: Path | None, interval_s: float = 15.0,
                 is_leader: Callable[[], bool] = lambda: True,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store, self.runs, self.rollouts = store, runs, rollouts
        self.is_leader = is_leader
        self.serving, self.reports = serving, reports
        self.repo = model_repo_path
        self.interval_s = interval_s
        self.clock = clock

    async def run(self) -> None:
        while True:
            if self.is_leader():  # one replica acts (the ModelRollout reconciler's Lease)
                await self.reconcile_all()
            await asyncio.sleep(self.interval_s)

    async def reconcile_all(self) -> None:
        try:
            policies = await self.store.list()
        except Exception as e:  # the API server away: try again next pass, say so once per pass
            log.warning("cannot list RetrainPolicies: %s", e)
            return
        for policy in policies:
            try:
                await self.reconcile(policy)
            except Exception:  # one policy's failure must not stop the others
                log.exception("RetrainPolicy %s: reconcile failed; retrying next pass", policy.name)

    async def reconcile(self, policy: RetrainPolicy) -> RetrainPolicy:
        phase = policy.status.phase
        if phase == RetrainPhase.TRAINING or phase == RetrainPhase.GATING:
            return await self._follow_training(policy)
        if phase == RetrainPhase.ROLLING_OUT:
            return await self._follow_rollout(policy)
        return await self._maybe_start(policy)

    # -- Idle: a trigger? ---------------------------------------------------------------------------------
    async def _maybe_start(self, policy: RetrainPolicy) -> RetrainPolicy:
        now = self.clock()
        if self.repo is None:
            return await self._idle(policy, Decision(False, None, (
                "the controller has no model repository (FLYWHEEL_CONTROLLER_MODEL_REPO) to find a trained version "
                "and its gates in: not retraining")))
        serving = await self.serving(policy.spec.model)
        report = await self.reports(policy.spec.model, serving.version) if serving is not None else None
        decision = decide(policy, now, serving, report, _parse_time(policy.manual_request()))
        if not decision.start:
            return await self._idle(policy, decision)
        if policy.spec.training.mode == "Stateful" and serving is None:
            return await self._idle(policy, Decision(False, None, (
                f"{decision.trigger.value if decision.trigger else 'a trigger'} fired, but training.mode Stateful "
                "warm-starts from the serving version and none serves yet: train the first version statelessly")))
        run = RetrainRun(trigger=decision.trigger, reason=decision.reason, started_at=now,
                         job=run_name(policy, now), version=None)
        status = policy.status.model_copy(update={
            "phase": RetrainPhase.TRAINING, "message": f"training {run.job}: {decision.reason}", "last_run": run,
            "next_eligible_at": None, "observed_generation": policy.metadata.get("generation")})
        policy = await self.store.write_status(policy, status)  # the intent first: see the module docstring
        stable = serving.version if serving is not None else None
        await self.runs.start(policy, run.job or "", trainer_env(policy, run, stable))
        await self._event(policy, "TrainingStarted",
                          f"{run.trigger.value if run.trigger else ''}: {decision.reason}; trainer run {run.job}, "
                          f"to beat {stable or 'nothing'}")
        return policy

    async def _idle(self, policy: RetrainPolicy, decision: Decision) -> RetrainPolicy:
        phase = RetrainPhase.SUSPENDED if policy.spec.suspend else (
            RetrainPhase.FAILED if policy.status.phase == RetrainPhase.FAILED else RetrainPhase.IDLE)
        # A failed run stays Failed until the next one starts; its message keeps saying why.
        message = policy.status.message if phase == RetrainPhase.FAILED else decision.reason
        status = policy.status.model_copy(update={
            "phase": phase, "message": message, "next_eligible_at": decision.eligible_at,
            "observed_generation": policy.metadata.get("generation")})
        if status == policy.status:
            return policy
        return await self.store.write_status(policy, status)

    # -- Training: follow the run, then the gates ---------------------------------------------------------
    async def _follow_training(self, policy: RetrainPolicy) -> RetrainPolicy:
        run = policy.status.last_run or RetrainRun()
        name = run.job or ""
        state = await self.runs.state(policy, name)
        if state.state == "missing":
            serving = await self.serving(policy.spec.model)
            stable = serving.version if serving is not None else None
            await self.runs.start(policy, name, trainer_env(policy, run, stable))
            log.info("RetrainPolicy %s: run %s was recorded but not started; started it", policy.name, name)
            return policy
        if state.state == "running":
            return policy
        version = self._published(policy, name)
        now = self.clock()
        if version is None and state.ended_at is not None \
                and (now - state.ended_at).total_seconds() < PUBLISH_GRACE_S:
            return policy  # ended moments ago: its version may not be visible here yet
        if version is None:
            why = state.message or "it ended without publishing a version"
            ended = run.model_copy(update={"finished_at": now, "verdict": "TrainingFailed"})
            policy = await self.store.write_status(policy, _ended(
                policy.status, ended, RetrainPhase.FAILED, f"trainer run {name} published no version: {why}"))
            await self._event(policy, "TrainingFailed", f"trainer run {name}: {why}", "Warning")
            return policy
        gates = read_gates(self.repo, policy.spec.model, version) if self.repo is not None else None
        run = run.model_copy(update={"version": version})
        if gates is not None and gates.verdict != "accepted":
            reasons = gates.reason or "its gates failed"
            ended = run.model_copy(update={"gates_passed": False, "finished_at": now, "verdict": "CandidateRejected"})
            policy = await self.store.write_status(policy, _ended(
                policy.status, ended, RetrainPhase.IDLE, f"{version} rejected by its gates: {reasons}; no traffic"))
            await self._event(policy, "CandidateRejected", f"{version} (run {name}): {reasons}", "Warning")
            return policy
        serving = await self.serving(policy.spec.model)
        stable = serving.version if serving is not None else None
        rollout = rollout_object(policy, run, stable, version)
        await self.rollouts.create(policy, rollout)
        run = run.model_copy(update={"gates_passed": True, "rollout": rollout["metadata"]["name"]})
        status = policy.status.model_copy(update={
            "phase": RetrainPhase.ROLLING_OUT, "last_run": run,
            "message": f"{version} passed its gates; ModelRollout {run.rollout} from {stable or 'no stable'}"})
        policy = await self.store.write_status(policy, status)
        await self._event(policy, "RolloutCreated",
                          f"{version} (run {name}) passed its gates; ModelRollout {run.rollout} created")
        return policy

    def _published(self, policy: RetrainPolicy, run: str) -> str | None:
        if self.repo is None:
            return None
        return published_by_run(self.repo, policy.spec.model, run)

    # -- RollingOut: follow the ModelRollout to its verdict -----------------------------------------------
    async def _follow_rollout(self, policy: RetrainPolicy) -> RetrainPolicy:
        run = policy.status.last_run or RetrainRun()
        found = await self.rollouts.phase(policy, run.rollout or "")
        if found is not None and found[0] not in _TERMINAL:
            return policy
        verdict, message = found if found is not None else ("Deleted", "the ModelRollout was deleted")
        ended = run.model_copy(update={"verdict": verdict, "finished_at": self.clock()})
        policy = await self.store.write_status(policy, _ended(
            policy.status, ended, RetrainPhase.IDLE, f"ModelRollout {run.rollout} ended {verdict}: {message}"))
        kind: Literal["Normal", "Warning"] = "Normal" if verdict == "Succeeded" else "Warning"
        await self._event(policy, f"Rollout{verdict}", f"{run.version} (run {run.job}): {message}", kind)
        return policy

    async def _event(self, policy: RetrainPolicy, reason: str, message: str,
                     kind: Literal["Normal", "Warning"] = "Normal") -> None:
        log.info("RetrainPolicy %s: %s: %s", policy.name, reason, message)
        try:
            await self.store.post_event(policy, Event(reason=re.sub(r"[^A-Za-z]", "", reason), message=message,
                                                      type=kind))
        except Exception as e:  # an Event is a record, not a step: never undo the step for it
            log.warning("RetrainPolicy %s: could not post Event %s: %s", policy.name, reason, e)


_TERMINAL = {"Succeeded", "RolledBack", "Aborted", "Failed"}
