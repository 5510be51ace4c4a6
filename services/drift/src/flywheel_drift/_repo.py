"""Loading references from the model repository: the only place a reference may come from.

A version is loaded through `flywheel_core.model_repo.load_version`, which verifies every file's sha256
(drift_state included, when the trainer shipped it), then its drift_reference.parquet becomes a
`Reference`. Loaded references are cached per (model, version); "latest" is looked up again every
REPO_POLL_INTERVAL_S, so a newly published version is picked up without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pandas as pd

from flywheel_core import model_repo

from ._config import Settings
from ._errors import ReferenceUnavailable
from ._reference import Reference, build_reference
from ._state import REFERENCE_FILE, online_threshold, read_state

log = logging.getLogger("flywheel_drift.repo")


class ReferenceLoader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repo = Path(settings.model_repo)
        self._cache: dict[tuple[str, str], Reference] = {}
        self._failures: dict[tuple[str, str], str] = {}
        self._published: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def published(self, model: str) -> list[str]:
        """Published versions of `model`, oldest first (re-read at most every REPO_POLL_INTERVAL_S)."""
        now = time.monotonic()
        cached = self._published.get(model)
        if cached is None or now - cached[0] >= self.settings.repo_poll_interval_s:
            cached = (now, model_repo.list_versions(self.repo, model))
            self._published[model] = cached
        return cached[1]

    def latest(self, model: str) -> str | None:
        versions = self.published(model)
        return versions[-1] if versions else None

    def resolve(self, model: str, version: str | None) -> str | None:
        """The version an event belongs to: its own, else FLYWHEEL_DRIFT_ASSUME_VERSION."""
        if version:
            return version
        assumed = self.settings.assume_version
        if assumed == "latest":
            return self.latest(model)
        return assumed or None

    def failure(self, model: str, version: str) -> str | None:
        return self._failures.get((model, version))

    def load(self, model: str, version: str) -> Reference:
        """The version's Reference; ReferenceUnavailable (message says why) when it cannot be used."""
        key = (model, version)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            try:
                reference = self._load(model, version)
            except ReferenceUnavailable as e:
                self._failures[key] = str(e)
                raise
            except model_repo.ModelRepoError as e:
                self._failures[key] = str(e)
                raise ReferenceUnavailable(str(e)) from e
            self._failures.pop(key, None)
            self._cache[key] = reference
            return reference

    def loaded(self) -> list[Reference]:
        return list(self._cache.values())

    def _load(self, model: str, version: str) -> Reference:
        path = model_repo.resolve(self.repo, model, version)
        published = model_repo.load_version(path)  # verifies sha256 of every listed file
        parquet = path / REFERENCE_FILE
        if not parquet.is_file():
            raise ReferenceUnavailable(f"{model}/{version} has no {REFERENCE_FILE}: no reference, no drift detection")
        digest = published.metadata.get("files", {}).get(REFERENCE_FILE) or model_repo.sha256_file(parquet)
        state = read_state(path, digest)
        try:
            frame = pd.read_parquet(parquet)
        except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
            raise ReferenceUnavailable(f"{parquet} cannot be read: {e}") from e
        columns = {name: frame[name].to_numpy() for name in frame.columns}
        reference = build_reference(model, version, published.metadata, columns, self.settings.skip_features, state)
        online = [n for n in self.settings.online_features if n in reference.sorted_values]
        reference.state["online"] = online_threshold(state, self.settings.online_ert, self.settings.online_k,
                                                     online, reference.rows)
        if state is None:
            log.warning("%s/%s has no drift_state: online threshold h=%.3f from %s; ship drift_state with "
                        "`python -m flywheel_drift precompute --version-dir DIR` at publish time", model, version,
                        reference.state["online"]["h"], reference.state["online"]["method"])
        return reference
