"""Reading model metadata from the model repository: the default version at start-up (or as soon as it
appears), and any other published version a request names, once per version.

Loading verifies the version's digests and validates its metadata against the typed contract
(flywheel_core.model_repo.load_version), then checks that typed metadata against this transformer's
schema. When nothing is published yet, the transformer still starts (live, not ready) and a daemon
thread looks again every few seconds: in a cluster the transformer may start before the training job
has published, and crash-looping until then helps nobody.

A request that names a version (`x-flywheel-model-version`) gets that version's spec from `SpecCache`:
loaded on first use in a worker thread (verifying digests hashes every file of the version, model
files included: milliseconds to seconds, never on the event loop), then served from memory. The
cache is a small LRU; the list of published versions and failed loads are remembered for a
poll interval, so neither a steady stream of requests for a cached version nor one for an unpublished
version reads the disk per request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from flywheel_core import model_repo

from ._errors import ModelMetadataError, VersionNotPublished, VersionUnusable
from ._headers import MODEL_VERSION_HEADER
from ._spec import ModelSpec, spec_from_metadata

log = logging.getLogger("flywheel_transformer.repo")


def load_spec(repo: Path, model: str, version: str = "latest") -> ModelSpec:
    """The spec of `version` of `model`; raises model_repo.ModelRepoError (metadata that does not fit the
    contract is model_repo.ModelMetadataError, naming the field) or ModelMetadataError (fits the contract, not
    this transformer)."""
    path = model_repo.resolve(Path(repo), model, version)
    loaded = model_repo.load_version(path)
    return spec_from_metadata(loaded.spec, where=str(path / model_repo.METADATA_FILE))


class SpecWatcher:
    """Polls the repository until the version can be loaded, then hands it over once."""

    def __init__(
        self,
        repo: Path,
        model: str,
        version: str,
        interval_s: float,
        on_loaded: Callable[[ModelSpec], None],
        known_problem: str | None = None,
    ) -> None:
        self.repo, self.model, self.version = Path(repo), model, version
        self.interval_s = interval_s
        self.on_loaded = on_loaded
        self._known_problem = known_problem  # already logged by the caller
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flywheel-spec-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last_problem = self._known_problem
        while not self._stop.wait(self.interval_s):
            try:
                spec = load_spec(self.repo, self.model, self.version)
            except (model_repo.ModelRepoError, ModelMetadataError) as e:
                if str(e) != last_problem:  # one line per distinct problem, not one per poll
                    last_problem = str(e)
                    log.warning("model metadata not loadable yet, still not ready: %s", e)
                continue
            log.info("loaded metadata of model %s %s; ready", spec.model, spec.version)
            self.on_loaded(spec)
            return


SPEC_CACHE_VERSIONS = 8
"""Specs kept in memory: a rollout routes to two or three versions at a time (stable, canary, shadow);
eight leaves room for overlapping rollouts while bounding memory."""

FAILED_LOADS_KEPT = 64
"""Published versions whose load failed, remembered so their files are not re-hashed per request."""


class SpecCache:
    """Specs of named versions, loaded off the event loop once and kept in a bounded LRU.

    Use from one event loop. `get` raises VersionNotPublished (404) for a version the repository does not
    have and VersionUnusable (503) for a published one this transformer cannot use; both answers are
    remembered for `recheck_s` seconds, after which the repository is looked at again (a version
    published meanwhile is then served).
    """

    def __init__(
        self,
        repo: Path,
        model: str,
        recheck_s: float,
        capacity: int = SPEC_CACHE_VERSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo, self.model = Path(repo), model
        self.recheck_s = recheck_s
        self.capacity = capacity
        self.clock = clock
        self.loads = 0
        """Versions loaded from disk so far (tests and logs)."""
        self._specs: OrderedDict[str, ModelSpec] = OrderedDict()
        self._failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._published: tuple[float, list[str]] | None = None
        self._lock: asyncio.Lock | None = None

    def put(self, spec: ModelSpec) -> None:
        """Keep an already loaded spec (the default version, loaded at start-up)."""
        self._specs[spec.version] = spec
        self._specs.move_to_end(spec.version)
        while len(self._specs) > self.capacity:
            self._specs.popitem(last=False)

    def cached(self) -> list[str]:
        """Versions in memory, least recently used first."""
        return list(self._specs)

    async def servable(self) -> list[str]:
        """Published versions, oldest first, less those whose load failed within the last `recheck_s`: what a
        request may name. The listing is the same remembered one `get` uses, so this reads the disk once per
        interval at most and never hashes a version."""
        now = self.clock()
        published = await self._published_versions(now)
        return [v for v in published if not (v in self._failed and now < self._failed[v][0])]

    async def get(self, version: str) -> ModelSpec:
        spec = self._hit(version)
        if spec is not None:
            return spec
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one load at a time: concurrent first requests for a version load it once
            spec = self._hit(version)
            if spec is not None:
                return spec
            return await self._load(version)

    def _hit(self, version: str) -> ModelSpec | None:
        spec = self._specs.get(version)
        if spec is not None:
            self._specs.move_to_end(version)
        return spec

    async def _load(self, version: str) -> ModelSpec:
        now = self.clock()
        published = await self._published_versions(now)
        if version not in published:
            raise VersionNotPublished(self._not_published(version, published), version=version, published=published)
        failed = self._failed.get(version)
        if failed is not None and now < failed[0]:
            raise VersionUnusable(failed[1], version=version)
        try:
            spec = await asyncio.to_thread(self._load_named, version)
        except model_repo.VersionNotFound as e:  # removed since the listing: the repo says so now
            self._published = None
            raise VersionNotPublished(self._not_published(version, published), version=version) from e
        except (model_repo.ModelRepoError, ModelMetadataError) as e:
            message = f"model '{self.model}' version '{version}' is published but this transformer cannot use it: {e}"
            log.warning("%s", message)
            self._failed[version] = (now + self.recheck_s, message)
            self._failed.move_to_end(version)
            while len(self._failed) > FAILED_LOADS_KEPT:
                self._failed.popitem(last=False)
            raise VersionUnusable(message, version=version) from e
        self._failed.pop(version, None)
        self.loads += 1
        log.info("loaded metadata of model %s %s for requests that name it", self.model, version)
        self.put(spec)
        return spec

    def _load_named(self, version: str) -> ModelSpec:
        spec = load_spec(self.repo, self.model, version)
        if spec.version != version:  # the cache is keyed by the name asked for: they must agree
            raise ModelMetadataError(
                f"{self.repo / self.model / version / model_repo.METADATA_FILE} says version '{spec.version}': "
                "republish the version with the trainer"
            )
        return spec

    async def _published_versions(self, now: float) -> list[str]:
        # A listing younger than recheck_s answers without the disk: requests for unpublished versions cost
        # one directory listing per interval at most, and a version published meanwhile is seen after it.
        if self._published is not None and now < self._published[0]:
            return self._published[1]
        versions = await asyncio.to_thread(model_repo.list_versions, self.repo, self.model)
        self._published = (now + self.recheck_s, versions)
        return versions

    def _not_published(self, version: str, published: list[str]) -> str:
        listed = ", ".join(published) if published else "none"
        return (
            f"model '{self.model}' has no published version '{version}' (published: {listed}): "
            f"send one of those in the {MODEL_VERSION_HEADER} header, or omit the header"
        )
