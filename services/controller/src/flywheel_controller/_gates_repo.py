"""A candidate's gates, read from the model repository before any traffic moves.

The trainer publishes every version, including one its gates rejected (so a person can read why), and marks it
in metadata.json `gates` (the contract is flywheel_core.model_repo.VersionGates; docs/architecture.md, "Model repo
contract"). The controller refuses to roll out a rejected version. It reads the repository directly
(FLYWHEEL_CONTROLLER_MODEL_REPO, `--model-repo` in local mode: the same directory the predictor serves from, or a
read-only mount of it in a cluster) and only the fields it acts on: `gates.status` and the failed checks' names and
reasons. flywheel-core itself is not imported: it would bring numpy, pandas and pyarrow into the controller for
one small file.

Fail closed: with a repository configured, a candidate that is not published there, or whose metadata cannot be
read or does not fit, is "unverified" and refused too. Versions published before gates existed have none and are
accepted.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._types import CandidateGates

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_VERSION = re.compile(r"^v\d+$")


class _Check(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    passed: bool
    reason: str = ""


class _Gates(BaseModel):
    """The part of metadata.json `gates` the controller acts on (VersionGates in flywheel_core.model_repo)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["candidate", "rejected"]
    stable_version: str | None = None
    checks: list[_Check] = Field(default_factory=list)


def read_gates(repo: Path, model: str, version: str) -> CandidateGates:
    """The verdict of `version`'s gates in `repo` (blocking file I/O: call it off the event loop)."""
    if not _NAME.match(model) or not _VERSION.match(version):
        return CandidateGates("unverified", f"{model}/{version} is not a model repository path")
    path = Path(repo) / model / version / "metadata.json"
    try:
        document: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return CandidateGates("unverified", f"{path} does not exist: {version} is not published in {repo}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return CandidateGates("unverified", f"{path} cannot be read: {e}")
    raw = document.get("gates") if isinstance(document, dict) else None
    if raw is None:
        return CandidateGates("accepted", "published before gates existed")
    try:
        gates = _Gates.model_validate(raw)
    except ValidationError as e:
        problem = e.errors()[0]["msg"]
        return CandidateGates("unverified", f"{path} has a `gates` field that does not fit the contract: {problem}")
    if gates.status == "candidate":
        return CandidateGates("accepted", f"passed its gates against {gates.stable_version or 'no stable'}")
    failed = "; ".join(f"{check.name}: {check.reason}" for check in gates.checks if not check.passed)
    against = f" against {gates.stable_version}" if gates.stable_version else ""
    return CandidateGates("rejected", f"failed{against}: {failed or 'no check named'}")


def published_by_run(repo: Path, model: str, run: str) -> str | None:
    """The version of `model` whose metadata lineage names `run` (`lineage.run.id`: the trainer's RUN_ID, which the
    RetrainPolicy loop sets to its run's name), newest first; None when that run published nothing. Blocking file
    I/O, metadata.json only."""
    root = Path(repo) / model
    if not _NAME.match(model) or not root.is_dir():
        return None
    numbered = sorted(((int(child.name[1:]), child) for child in root.iterdir() if _VERSION.match(child.name)),
                      reverse=True)
    for _, child in numbered:
        try:
            document: Any = json.loads((child / "metadata.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not published (yet), or broken: not this run's version
        lineage = document.get("lineage") if isinstance(document, dict) else None
        found = lineage.get("run") if isinstance(lineage, dict) else None
        if isinstance(found, dict) and found.get("id") == run:
            return child.name
    return None


def trained_at(repo: Path, model: str, version: str) -> datetime | None:
    """The training cut-off of `version` (metadata lineage.cutoff, RFC 3339); None when unknown."""
    if not _NAME.match(model) or not _VERSION.match(version):
        return None
    try:
        document: Any = json.loads((Path(repo) / model / version / "metadata.json").read_text())
        cutoff = document["lineage"]["cutoff"]
        moment = datetime.fromisoformat(str(cutoff).replace("Z", "+00:00"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class RepositoryGates:
    """GateSource over a model repository directory."""

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo)

    async def candidate_gates(self, model: str, version: str) -> CandidateGates | None:
        return await asyncio.to_thread(read_gates, self.repo, model, version)


class NoGateCheck:
    """GateSource for a controller without a model repository: nothing is checked (the status quo before gates)."""

    async def candidate_gates(self, model: str, version: str) -> CandidateGates | None:
        return None


def make_gate_source(repo: Path | None) -> RepositoryGates | NoGateCheck:
    return RepositoryGates(repo) if repo is not None else NoGateCheck()
