"""The RetrainPolicy loop on the API server: policies and their status, trainer Jobs, ModelRollouts, Events.

A trainer run is a Job made from the chart's trainer CronJob (`jobTemplate`), as `kubectl create job
--from=cronjob/<name>` makes one: the same image, volumes, security context and resources the chart renders,
with the run's settings added to the `trainer` container's environment. Two additions of the controller's own:
the Job is owned by its RetrainPolicy (deleting the policy deletes its Jobs), and exit code 6 (the trainer
published the version as rejected by its gates) fails the Job at once instead of retrying it (podFailurePolicy):
training again on the same data would be rejected again.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from flywheel_contracts.retrain import PLURAL as POLICIES
from flywheel_contracts.retrain import RetrainPolicy, RetrainPolicyStatus
from flywheel_contracts.rollout import GROUP, PLURAL, VERSION

from ._kube import KubeClient, NotFoundError
from ._ports import ConflictError, StoreError
from ._retrainer import POLICY_LABEL, RUN_ANNOTATION, RunState
from ._store_kube import _nulls_outside_lists, event_body
from ._types import Event

log = logging.getLogger("flywheel.controller.retrain")

TRAINER_CONTAINER = "trainer"
REJECTED_EXIT_CODE = 6  # flywheel_trainer: published, but rejected by its gates


def _owner(policy: RetrainPolicy) -> list[dict[str, Any]]:
    uid = policy.metadata.get("uid")
    if not uid:
        return []
    return [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainPolicy", "name": policy.name, "uid": uid,
             "controller": True, "blockOwnerDeletion": False}]


class KubePolicyStore:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.collection = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{POLICIES}"
        self.instance = os.environ.get("HOSTNAME") or socket.gethostname()
        self._invalid_logged: set[tuple[str, str]] = set()

    async def list(self) -> list[RetrainPolicy]:
        answer = await self.client.request("GET", self.collection)
        policies = []
        for obj in answer.get("items") or []:
            try:
                policies.append(RetrainPolicy.model_validate(obj))
            except ValidationError as e:
                meta = obj.get("metadata") or {}
                seen = (str(meta.get("name")), str(meta.get("resourceVersion")))
                if seen not in self._invalid_logged:  # once per version of the object, not every pass
                    self._invalid_logged.add(seen)
                    log.warning("RetrainPolicy %s is not valid, skipped: %s", seen[0], e.errors()[0]["msg"])
        return policies

    async def write_status(self, policy: RetrainPolicy, status: RetrainPolicyStatus) -> RetrainPolicy:
        body = _nulls_outside_lists(status.model_dump(mode="json", by_alias=True))
        path = f"{self.collection}/{policy.name}/status"
        return RetrainPolicy.model_validate(
            await self.client.request("PATCH", path, json_body={"status": body}, merge_patch=True))

    async def post_event(self, policy: RetrainPolicy, event: Event) -> None:
        meta = policy.metadata
        involved = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainPolicy", "name": policy.name,
                    "namespace": meta.get("namespace") or self.namespace, "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion")}
        await self.client.request("POST", f"/api/v1/namespaces/{involved['namespace']}/events",
                                  json_body=event_body(involved, event, self.instance))


def job_from_cronjob(cronjob: dict[str, Any], policy: RetrainPolicy, name: str, env: dict[str, str]) -> dict[str, Any]:
    """The Job of one run: the CronJob's jobTemplate, named, owned and labelled, with `env` set on the trainer."""
    template = copy.deepcopy((cronjob.get("spec") or {}).get("jobTemplate") or {})
    spec = template.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    trainer = next((c for c in containers if c.get("name") == TRAINER_CONTAINER), None)
    if trainer is None:
        raise StoreError(f"CronJob {cronjob.get('metadata', {}).get('name')} has no container named "
                         f"{TRAINER_CONTAINER!r} to run the training in")
    kept = [e for e in trainer.get("env") or [] if e.get("name") not in env]
    trainer["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    spec["podFailurePolicy"] = {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": TRAINER_CONTAINER, "operator": "In", "values": [REJECTED_EXIT_CODE]}}]}
    meta = template.get("metadata") or {}
    labels = {**(meta.get("labels") or {}), POLICY_LABEL: policy.name}
    annotations = {**(meta.get("annotations") or {}), RUN_ANNOTATION: name,
                   "cronjob.kubernetes.io/instantiate": "manual"}
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if owner := _owner(policy):
        metadata["ownerReferences"] = owner
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


class KubeJobRuns:
    """Trainer runs as Jobs made from the chart's trainer CronJob (`cronjob`)."""

    def __init__(self, client: KubeClient, namespace: str, cronjob: str) -> None:
        self.client, self.namespace, self.cronjob = client, namespace, cronjob
        self.jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"

    async def start(self, policy: RetrainPolicy, name: str, env: dict[str, str]) -> None:
        try:
            cronjob = await self.client.request(
                "GET", f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs/{self.cronjob}")
        except NotFoundError as e:
            raise StoreError(f"the trainer CronJob {self.namespace}/{self.cronjob} does not exist (chart value "
                             "trainer.enabled, or FLYWHEEL_CONTROLLER_TRAINER_CRONJOB)") from e
        try:
            await self.client.request("POST", self.jobs, json_body=job_from_cronjob(cronjob, policy, name, env))
        except ConflictError:
            log.info("Job %s exists already: this run was started before", name)

    async def state(self, policy: RetrainPolicy, name: str) -> RunState:
        try:
            job = await self.client.request("GET", f"{self.jobs}/{name}")
        except NotFoundError:
            return RunState("missing")
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            ended = _time(condition.get("lastTransitionTime"))
            if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
                return RunState("succeeded", ended_at=ended)
            if condition.get("type") in ("Failed", "FailureTarget"):
                return RunState("failed", f"Job {name} failed: {condition.get('reason')}: "
                                          f"{condition.get('message') or ''}".rstrip(": "), ended)
        return RunState("running")


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


class KubeRollouts:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.collection = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    async def create(self, policy: RetrainPolicy, rollout: dict[str, Any]) -> None:
        try:
            await self.client.request("POST", self.collection, json_body=rollout)
        except ConflictError:
            log.info("ModelRollout %s exists already: created by an earlier pass", rollout["metadata"]["name"])

    async def phase(self, policy: RetrainPolicy, name: str) -> tuple[str, str] | None:
        try:
            obj = await self.client.request("GET", f"{self.collection}/{name}")
        except NotFoundError:
            return None
        status = obj.get("status") or {}
        return str(status.get("phase") or "Pending"), str(status.get("message") or "")
