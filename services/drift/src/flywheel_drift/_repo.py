"""Loading references from the model repository: the only place a reference may come from.

A version is loaded through `flywheel_core.model_repo.load_version`, which verifies every file's sha256
(drift_state included, when the trainer shipped it) and validates metadata.json against the typed
contract (ModelMetadata), then its drift_reference.parquet and that typed metadata become a `Reference`.
Loaded references are cached per (model, version); "latest" is looked up again every
REPO_POLL_INTERVAL_S, so a newly published version is picked up without a restart. "latest" is what
`model_repo.resolve` means by it: the highest version not published as rejected by its gates (a rejected
version gets no traffic, so unnamed events are not its own; a caller naming it is still analysed against
it).

Versions named by callers are only ever looked up in the repository's listing (`is_published`), never
used as a path or a cache key until they are found there; the cache and the load errors are bounded by
MAX_TRACKED_VERSIONS (least recently used forgotten first: a cache, reloaded on demand).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from flywheel_core import model_repo
from flywheel_core.feature_pipeline import read_parquet

from ._config import Settings
from ._errors import ReferenceUnavailable
from ._reference import Reference, build_reference
from ._state import REFERENCE_FILE, online_threshold, read_state

log = logging.getLogger("flywheel_drift.repo")

# On a version missing from the cached listing, re-read the listing at most this often (seconds): a version
# published a moment ago is found at once, while invented versions cannot make every request scan the repo.
MISS_REFRESH_S = 1.0


class ReferenceLoader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repo = Path(settings.model_repo)
        self._cache: OrderedDict[tuple[str, str], Reference] = OrderedDict()
        self._failures: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._published: dict[str, tuple[float, list[str], str | None]] = {}
        self._lock = threading.Lock()

    def _listing(self, model: str) -> tuple[float, list[str], str | None]:
        """(when read, published versions oldest first, latest accepted), re-read at most every
        REPO_POLL_INTERVAL_S: metadata.json files are read here, never per event."""
        now = time.monotonic()
        cached = self._published.get(model)
        if cached is None or now - cached[0] >= self.settings.repo_poll_interval_s:
            cached = (now, model_repo.list_versions(self.repo, model), self._latest_accepted(model))
            self._published[model] = cached
        return cached

    def _latest_accepted(self, model: str) -> str | None:
        try:
            return model_repo.latest_accepted(self.repo, model)
        except model_repo.ModelRepoError as e:  # a metadata.json removed or unreadable mid-scan
            log.warning("%s: latest version not resolved: %s", model, e)
            return None

    def published(self, model: str) -> list[str]:
        """Published versions of `model`, oldest first (re-read at most every REPO_POLL_INTERVAL_S)."""
        return self._listing(model)[1]

    def is_published(self, model: str, version: str) -> bool:
        """Whether the repository publishes `version` of `model` (a miss re-reads the listing, at most once
        per MISS_REFRESH_S)."""
        if version in self.published(model):
            return True
        cached = self._published.get(model)
        if cached is not None and time.monotonic() - cached[0] >= MISS_REFRESH_S:
            self._published.pop(model, None)
            return version in self.published(model)
        return False

    def latest(self, model: str) -> str | None:
        """The highest published version of `model` not rejected by its gates (`model_repo.resolve`'s
        "latest"); None when there is none."""
        return self._listing(model)[2]

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
                self._cache.move_to_end(key)
                return self._cache[key]
            try:
                reference = self._load(model, version)
            except ReferenceUnavailable as e:
                _bounded_put(self._failures, key, str(e), self.settings.max_tracked_versions)
                raise
            except model_repo.ModelRepoError as e:
                _bounded_put(self._failures, key, str(e), self.settings.max_tracked_versions)
                raise ReferenceUnavailable(str(e)) from e
            self._failures.pop(key, None)
            _bounded_put(self._cache, key, reference, self.settings.max_tracked_versions)
            return reference

    def loaded(self) -> list[Reference]:
        return list(self._cache.values())

    def _load(self, model: str, version: str) -> Reference:
        path = model_repo.resolve(self.repo, model, version)
        published = model_repo.load_version(path)  # verifies sha256 of every listed file
        parquet = path / REFERENCE_FILE
        if not parquet.is_file():
            raise ReferenceUnavailable(f"{model}/{version} has no {REFERENCE_FILE}: no reference, no drift detection")
        digest = published.spec.files.get(REFERENCE_FILE) or model_repo.sha256_file(parquet)
        state = read_state(path, digest)
        try:
            frame = read_parquet(parquet)
        except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
            raise ReferenceUnavailable(f"{parquet} cannot be read: {e}") from e
        columns = {name: frame[name].to_numpy() for name in frame.columns}
        reference = build_reference(model, version, published.spec, columns, self.settings.skip_features, state)
        online = [n for n in self.settings.online_features if n in reference.sorted_values]
        reference.state["online"] = online_threshold(state, self.settings.online_ert, self.settings.online_k,
                                                     online, reference.rows)
        if state is None:
            log.warning("%s/%s has no drift_state: online threshold h=%.3f from %s; ship drift_state with "
                        "`python -m flywheel_drift precompute --version-dir DIR` at publish time", model, version,
                        reference.state["online"]["h"], reference.state["online"]["method"])
        return reference


def _bounded_put(entries: OrderedDict, key: tuple[str, str], value: object, limit: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > limit:
        entries.popitem(last=False)
