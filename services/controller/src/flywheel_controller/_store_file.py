"""ModelRollouts from YAML files, for running the controller without a cluster (`--local`).

The spec comes from the files (the same YAML `kubectl apply` takes); status lives beside it in
`<state_dir>/<namespace>_<name>.status.json`, written atomically, so a local controller stopped mid-rollout
resumes where it was, as it does from the status subresource in a cluster. An intent can be given by writing
`status.intent` into that file (`python -m flywheel_controller intent ...` does it), as `kubectl flywheel` does
through the status subresource. Events go to the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flywheel_contracts import FINALIZER, ModelRollout, ModelRolloutStatus
from flywheel_contracts.rollout import KIND

from ._ports import StoreError
from ._types import Event

log = logging.getLogger("flywheel.controller")


def documents_of_kind(paths: list[Path], kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document of `kind` in the files, with its file (other kinds are skipped); StoreError names a
    file that cannot be read."""
    found = []
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as e:
            raise StoreError(f"{path}: cannot read the file ({e})") from e
        found += [(path, doc) for doc in documents if isinstance(doc, dict) and doc.get("kind") == kind]
    return found


def load_rollout_files(paths: list[Path]) -> list[ModelRollout]:
    """Every ModelRollout document in the files (other kinds are skipped); StoreError names a bad one."""
    rollouts: list[ModelRollout] = []
    for path, doc in documents_of_kind(paths, KIND):
        doc = {**doc, "metadata": {"creationTimestamp": _mtime(path), **(doc.get("metadata") or {})}}
        try:
            rollouts.append(ModelRollout.from_object(doc))
        except ValidationError as e:
            raise StoreError(f"{path}: not a valid ModelRollout: {e}") from e
    return rollouts


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()


class FileRolloutStore:
    def __init__(self, paths: list[Path], state_dir: Path) -> None:
        self.paths = paths
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._rollouts = {r.key: r for r in load_rollout_files(paths)}
        self._changed: asyncio.Queue[str] = asyncio.Queue()
        self._version = 0

    def add(self, path: Path) -> None:
        """Take on the rollouts of one more file (the RetrainPolicy loop's, in local mode); known ones stay."""
        for rollout in load_rollout_files([path]):
            if rollout.key not in self._rollouts:
                self._rollouts[rollout.key] = rollout
                self._changed.put_nowait(rollout.key)

    def state_file(self, rollout: ModelRollout) -> Path:
        return self.state_dir / f"{rollout.namespace}_{rollout.name}.status.json"

    def _with_saved_status(self, rollout: ModelRollout) -> ModelRollout:
        path = self.state_file(rollout)
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            return rollout
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: cannot read the saved status ({e}); delete it to start over") from e
        if saved.get("generation") != rollout.generation or saved.get("specHash") != _spec_hash(rollout):
            return rollout  # the file's spec changed since: start again
        return rollout.model_copy(update={"status": ModelRolloutStatus.model_validate(saved.get("status") or {}),
                                          "finalizers": tuple(saved.get("finalizers") or ())})

    async def list(self) -> list[ModelRollout]:
        return [self._with_saved_status(r) for r in self._rollouts.values()]

    async def changes(self) -> AsyncIterator[str]:
        while True:
            yield await self._changed.get()

    async def get(self, namespace: str, name: str) -> ModelRollout | None:
        rollout = self._rollouts.get(f"{namespace}/{name}")
        return None if rollout is None else self._with_saved_status(rollout)

    async def write_status(self, rollout: ModelRollout, status: ModelRolloutStatus) -> ModelRollout:
        current = self._with_saved_status(rollout)
        # As the status subresource's merge patch: the controller never overwrites a person's intent.
        status = status.model_copy(update={"intent": current.status.intent})
        updated = current.model_copy(update={"status": status})
        self._save(updated)
        return updated

    async def set_finalizer(self, rollout: ModelRollout, present: bool) -> ModelRollout:
        current = self._with_saved_status(rollout)
        finalizers = tuple(f for f in current.finalizers if f != FINALIZER)
        if present:
            finalizers += (FINALIZER,)
        updated = current.model_copy(update={"finalizers": finalizers})
        self._save(updated)
        return updated

    async def post_event(self, rollout: ModelRollout, event: Event) -> None:
        log.info("%s %s: %s", rollout.name, event.reason, event.message)

    def _save(self, rollout: ModelRollout) -> None:
        path = self.state_file(rollout)
        tmp = path.with_suffix(".tmp")
        body = {"generation": rollout.generation, "specHash": _spec_hash(rollout),
                "finalizers": list(rollout.finalizers), "status": rollout.status.model_dump(mode="json", by_alias=True,
                                                                                              exclude_none=True)}
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, path)


def _spec_hash(rollout: ModelRollout) -> str:
    return hashlib.sha256(rollout.spec.model_dump_json(by_alias=True).encode()).hexdigest()[:16]

