"""The RetrainPolicy loop without a cluster (`--local`): policies from the same YAML files as the rollouts, status
in the state directory, trainer runs as subprocesses, ModelRollouts handed to the local rollout store.

A person's request (the cluster's `kubectl flywheel retrain`) is `python -m flywheel_controller retrain NAME
--state-dir DIR` here: it writes the request time into the policy's state file, which wins over the file's
annotation. Events go to the log and to `<state_dir>/<policy>.events.jsonl` (the local loop's timeline reads
them).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flywheel_contracts import ModelRollout
from flywheel_contracts.retrain import KIND, MANUAL_REQUEST_ANNOTATION, RetrainPolicy, RetrainPolicyStatus

from ._ports import StoreError
from ._retrainer import RunState
from ._store_file import FileRolloutStore, documents_of_kind
from ._types import Event

log = logging.getLogger("flywheel.controller.retrain")


def load_policy_files(paths: list[Path]) -> list[RetrainPolicy]:
    """Every RetrainPolicy document in the files (other kinds are skipped); StoreError names a bad one."""
    policies = []
    for path, doc in documents_of_kind(paths, KIND):
        try:
            policies.append(RetrainPolicy.model_validate(doc))
        except ValidationError as e:
            raise StoreError(f"{path}: not a valid RetrainPolicy: {e}") from e
    return policies


def request_retrain(state_dir: Path, name: str, now: datetime | None = None) -> Path:
    """A person's request for a run of policy `name` (local mode's `kubectl flywheel retrain`)."""
    path = state_dir / f"{name}.retrainpolicy.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved["manualRequest"] = (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat()
    _write(path, saved)
    return path


def _write(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


class FilePolicyStore:
    def __init__(self, paths: list[Path], state_dir: Path) -> None:
        self.state_dir = state_dir
        self._policies = {p.name: p for p in load_policy_files(paths)}

    def state_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.retrainpolicy.json"

    def _saved(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.state_file(name).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.state_file(name)}: cannot read the saved status ({e})") from e

    def __len__(self) -> int:
        return len(self._policies)

    async def list(self) -> list[RetrainPolicy]:
        policies = []
        for name, policy in self._policies.items():
            saved = self._saved(name)
            metadata = dict(policy.metadata)
            if saved.get("manualRequest"):
                metadata["annotations"] = {**(metadata.get("annotations") or {}),
                                           MANUAL_REQUEST_ANNOTATION: saved["manualRequest"]}
            status = RetrainPolicyStatus.model_validate(saved.get("status") or {})
            policies.append(policy.model_copy(update={"metadata": metadata, "status": status}))
        return policies

    async def write_status(self, policy: RetrainPolicy, status: RetrainPolicyStatus) -> RetrainPolicy:
        saved = self._saved(policy.name)
        saved["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        _write(self.state_file(policy.name), saved)
        return policy.model_copy(update={"status": status})

    async def post_event(self, policy: RetrainPolicy, event: Event) -> None:
        record = {"at": datetime.now(timezone.utc).isoformat(), "policy": policy.name, "reason": event.reason,
                  "type": event.type, "message": event.message}
        with open(self.state_dir / f"{policy.name}.events.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")


class SubprocessRuns:
    """Trainer runs as child processes: `command` (a shell-style string) with the run's settings in its
    environment, its output in `<state_dir>/runs/<name>.log`."""

    def __init__(self, command: str, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.argv = shlex.split(command)
        self.logs = state_dir / "runs"
        self.env = env or {}
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, policy: RetrainPolicy, name: str, env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            self._running[name] = subprocess.Popen(self.argv, env={**os.environ, **self.env, **env}, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.info("trainer run %s started: %s (log %s)", name, shlex.join(self.argv), self.logs / f"{name}.log")

    async def state(self, policy: RetrainPolicy, name: str) -> RunState:
        process = self._running.get(name)
        if process is None:
            return RunState("missing")  # never started here, or before this controller restarted: start it again
        code = process.poll()
        if code is None:
            return RunState("running")
        ended = datetime.now(timezone.utc)
        if code == 0:
            return RunState("succeeded", ended_at=ended)
        return RunState("failed", f"trainer exited {code} (log {self.logs / f'{name}.log'})", ended)

    def stop(self) -> None:
        for process in self._running.values():
            if process.poll() is None:
                process.terminate()


class LocalRollouts:
    """ModelRollouts written into `<state_dir>/rollouts/` and handed to the local rollout store at once."""

    def __init__(self, store: FileRolloutStore, state_dir: Path) -> None:
        self.store, self.directory = store, state_dir / "rollouts"

    async def create(self, policy: RetrainPolicy, rollout: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{rollout['metadata']['name']}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(rollout, sort_keys=False))
        self.store.add(path)

    async def phase(self, policy: RetrainPolicy, name: str) -> tuple[str, str] | None:
        found: ModelRollout | None = await self.store.get("default", name)
        if found is None:
            return None
        return found.status.phase.value, found.status.message or ""
