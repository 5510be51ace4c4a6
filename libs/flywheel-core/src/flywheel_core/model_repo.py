"""The model repository: immutable, digest-checked versions under `<repo>/<model>/<version>/`.

A version is published by writing everything into a staging directory, recording the sha256 of every
file in `metadata.json` (written last) and renaming the directory into place, so a reader either sees a
whole version or none. Loaders verify the digests before use: a model that is not byte-for-byte what the
trainer published is refused rather than served.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^v(\d+)$")


class ModelRepoError(Exception):
    """Base of every model repository error; the message says what to do."""


class VersionNotFound(ModelRepoError):
    """The requested model or version is not in the repository."""


class DigestMismatch(ModelRepoError):
    """A file of a published version is missing or does not match its recorded sha256."""


@dataclass(frozen=True)
class ModelVersion:
    """A verified, published model version."""

    path: Path
    metadata: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def model(self) -> str:
        return str(self.metadata["model"])

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def list_versions(repo: Path, model: str) -> list[str]:
    """Published versions of `model`, oldest first (a directory without metadata.json is not published)."""
    root = Path(repo) / model
    if not root.is_dir():
        return []
    numbered = []
    for child in root.iterdir():
        match = _VERSION_RE.match(child.name)
        if match and (child / METADATA_FILE).is_file():
            numbered.append((int(match.group(1)), child.name))
    return [name for _, name in sorted(numbered)]


def resolve(repo: Path, model: str, version: str = "latest") -> Path:
    """The directory of `version` ("latest" = highest vN) of `model`."""
    versions = list_versions(repo, model)
    if not versions:
        raise VersionNotFound(f"no published version of model '{model}' under {repo}: train one first (make train)")
    if version == "latest":
        return Path(repo) / model / versions[-1]
    if version not in versions:
        raise VersionNotFound(f"model '{model}' has no version '{version}' under {repo}; published: {', '.join(versions)}")
    return Path(repo) / model / version


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / METADATA_FILE).read_text())
    except FileNotFoundError as e:
        raise VersionNotFound(f"{path} has no {METADATA_FILE}: it is not a published version") from e
    except json.JSONDecodeError as e:
        raise ModelRepoError(f"{path / METADATA_FILE} is not valid JSON ({e.msg} at line {e.lineno})") from e


def load_version(path: Path, verify: bool = True) -> ModelVersion:
    """Read a version's metadata and, unless `verify` is false, check every file's sha256."""
    path = Path(path)
    metadata = read_metadata(path)
    if verify:
        for name, expected in sorted(metadata.get("files", {}).items()):
            target = path / name
            if not target.is_file():
                raise DigestMismatch(f"{target} is listed in {METADATA_FILE} but missing; republish the version")
            actual = sha256_file(target)
            if actual != expected:
                raise DigestMismatch(
                    f"{target} has sha256 {actual}, but {METADATA_FILE} records {expected}: "
                    "the published version was modified; republish it instead of editing it"
                )
    return ModelVersion(path=path, metadata=metadata)


def next_version(repo: Path, model: str) -> str:
    versions = list_versions(repo, model)
    last = int(_VERSION_RE.match(versions[-1]).group(1)) if versions else 0
    return f"v{last + 1}"


def publish(staging_dir: Path, repo: Path, model: str, metadata: dict[str, Any] | None = None) -> Path:
    """Publish the files in `staging_dir` as the next version of `model`; returns its directory.

    `metadata` (or the staging dir's metadata.json) gets `model`, `version` and `files` filled in and is
    written last. The staging directory is renamed into place, so it must be on the same filesystem as
    the repository (create it under `repo` with `staging_path`).
    """
    staging_dir = Path(staging_dir)
    if metadata is None:
        metadata = read_metadata(staging_dir)
    root = Path(repo) / model
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(repo, model)
    files = {}
    for entry in sorted(staging_dir.rglob("*")):
        if entry.is_file() and entry.name != METADATA_FILE:
            files[entry.relative_to(staging_dir).as_posix()] = sha256_file(entry)
    metadata = {**metadata, "model": model, "version": version, "files": files}
    tmp = staging_dir / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, staging_dir / METADATA_FILE)
    target = root / version
    try:
        os.rename(staging_dir, target)
    except OSError as e:
        raise ModelRepoError(f"could not move {staging_dir} into place as {target}: {e.strerror}") from e
    return target


def staging_path(repo: Path, model: str) -> Path:
    """A fresh staging directory inside the repository (same filesystem, so publish can rename it)."""
    root = Path(repo) / model
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{os.getpid()}-{os.urandom(4).hex()}"
    staging.mkdir()
    return staging
