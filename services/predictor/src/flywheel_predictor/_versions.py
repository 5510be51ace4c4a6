"""The versions of the model one worker serves, and when each is loaded and unloaded.

A router in front splits traffic between a stable and a candidate version and names the version in the
path (`/v2/models/<m>/versions/vN/...`) or in the `x-flywheel-model-version` header, so one predictor
process serves several versions. The default version (MODEL_VERSION, resolved once at start-up) answers
requests that name none and is never unloaded: a version published later takes no traffic until
something routes to it. Other versions are loaded

- at start-up: those VERSIONS lists (pinned: never unloaded; the server refuses to start if one cannot
  be loaded), or with VERSIONS=all every published one, newest first, up to MAX_LOADED_VERSIONS;
- when the repository poll (VERSIONS=all, every REPO_POLL_INTERVAL_S) sees a version appear;
- on demand, when a request names a published version that is not loaded. Requests for it meanwhile
  wait for that one load (a lock per version); the load runs on a thread, so the loaded versions keep
  serving. A failed load is remembered for LOAD_RETRY_S and answered 503 without trying again.

and unloaded when no request named them for UNLOAD_IDLE_S, or, least recently used first, to make room
under MAX_LOADED_VERSIONS; pinned versions never. Each worker process runs its own set: the start-up
versions arrive pickled from the parent and reopen their own sessions (see `_model`).

Unloading is safe under requests in flight: a request takes its model and hands its rows to the
model's inference lane without yielding to the event loop in between, and the lane scores everything
queued before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from time import monotonic, perf_counter
from typing import Any

from flywheel_core import model_repo

from ._config import Settings
from ._errors import ConfigError, InvalidRequest, ModelLoadError, PredictorError, VersionNotServed, VersionUnavailable
from ._metrics import LOADED_VERSIONS, VERSION_LOADS
from ._model import OnnxModel

log = logging.getLogger("flywheel_predictor")

VERSION_HEADER = "x-flywheel-model-version"
"""Request header naming the version for V1 and unversioned V2 calls; response header naming the scorer."""

_VERSION_RE = re.compile(r"^v\d+$")

ModelFactory = Callable[[Settings, str], OnnxModel]


def requested_version(value: str | None) -> str | None:
    """The version an `x-flywheel-model-version` header value names; None (absent or empty) means the default."""
    value = (value or "").strip()
    if not value:
        return None
    if not _VERSION_RE.match(value):
        raise InvalidRequest(
            f"header '{VERSION_HEADER}' has value {value!r}: "
            "expected a version such as 'v3' (or no header for the default)"
        )
    return value


def _number(version: str) -> int:
    return int(version[1:])


class VersionSet:
    """The loaded versions of one model in this worker: lookup per request, loads and unloads as above."""

    def __init__(self, settings: Settings, default: OnnxModel, factory: ModelFactory = OnnxModel) -> None:
        self.settings = settings
        self.default = default
        self.name = default.name
        self.factory = factory
        self.pinned = frozenset({default.version, *settings.listed_versions})
        self._models: dict[str, OnnxModel] = {default.version: default}
        self._seen: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        now = monotonic()
        self._used = dict.fromkeys(self._models, now)
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: set[str] = set()
        self._failures: dict[str, tuple[float, str]] = {}
        self._task: asyncio.Task | None = None

    # -- spawn support: a worker gets the versions, not the parent's locks, clocks or task -------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_used", "_locks", "_loading", "_failures", "_task"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- per request ---------------------------------------------------------------------------------
    @property
    def loaded(self) -> list[str]:
        """The loaded versions, oldest first."""
        return sorted(self._models, key=_number)

    def lookup(self, version: str) -> OnnxModel | None:
        """A loaded version, marked as used now; None if it is not loaded. Never loads, never waits."""
        model = self._models.get(version)
        if model is not None:
            self._used[version] = monotonic()
        return model

    async def get(self, version: str | None) -> OnnxModel:
        """The model for `version` (None: the default), loading it first if it is published but not loaded.

        Raises VersionNotServed (not published) or VersionUnavailable (its load failed, or no room).
        """
        if version is None:
            return self.default
        return self.lookup(version) or await self.load(version)

    def published(self) -> list[str]:
        return model_repo.list_versions(self.settings.model_repo, self.name)

    async def load(self, version: str, why: str = "on demand: a request named it") -> OnnxModel:
        self._refuse_if_failed(version)
        published = self.published()
        if version not in published:
            raise VersionNotServed(
                f"model '{self.name}' has no published version '{version}'; published: {', '.join(published) or 'none'}"
            )
        lock = self._locks.get(version)
        if lock is None:  # created only for published versions, so the dict stays as small as the repository
            lock = self._locks[version] = asyncio.Lock()
        async with lock:
            model = self.lookup(version)
            if model is not None:  # loaded by the request this one waited for
                return model
            self._refuse_if_failed(version)  # ... or that load failed
            self._make_room(version)
            self._loading.add(version)
            started = perf_counter()
            try:
                model = await asyncio.to_thread(self._open, version)
            except Exception as e:  # digests, ONNX Runtime, the file system: whatever it is, the version is not served
                raise VersionUnavailable(self._failed(version, e, why, started)) from e
            finally:
                self._loading.discard(version)
            self._add(model, why, started)
            return model

    # -- loading and unloading -----------------------------------------------------------------------
    def _open(self, version: str) -> OnnxModel:
        model = self.factory(self.settings, version)
        model.load()
        return model

    def _add(self, model: OnnxModel, why: str, started: float) -> None:
        self._models[model.version] = model
        self._used[model.version] = monotonic()
        VERSION_LOADS.labels(self.name, "loaded").inc()
        LOADED_VERSIONS.labels(self.name).set(len(self._models))
        log.info(
            "loaded %s (%s) in %.0f ms; %d of %d versions loaded: %s",
            model.summary(),
            why,
            (perf_counter() - started) * 1000,
            len(self._models),
            self.settings.max_loaded_versions,
            ", ".join(self.loaded),
        )

    def _failed(self, version: str, error: Exception, why: str, started: float) -> str:
        """Remember and log a failed load once; returns the message requests get meanwhile."""
        retry = self.settings.load_retry_s
        self._failures[version] = (monotonic() + retry, str(error))
        VERSION_LOADS.labels(self.name, "failed").inc()
        log.error(
            "could not load model=%s version=%s (%s) after %.0f ms: %s; requests for it get 503 for %gs "
            "(FLYWHEEL_PREDICTOR_LOAD_RETRY_S) before the next try",
            self.name,
            version,
            why,
            (perf_counter() - started) * 1000,
            error,
            retry,
        )
        return f"model '{self.name}' version {version} cannot be served: {error}"

    def _refuse_if_failed(self, version: str) -> None:
        failure = self._failures.get(version)
        if failure is None:
            return
        deadline, message = failure
        left = deadline - monotonic()
        if left <= 0:
            del self._failures[version]
            return
        raise VersionUnavailable(
            f"model '{self.name}' version {version} cannot be served: {message} (next load attempt in {left:.0f}s)"
        )

    def _make_room(self, version: str) -> None:
        limit = self.settings.max_loaded_versions
        while len(self._models) + len(self._loading) >= limit:
            victim = min((v for v in self._models if v not in self.pinned), key=self._used.__getitem__, default=None)
            if victim is None:
                raise VersionUnavailable(
                    f"cannot load model '{self.name}' version {version}: "
                    f"FLYWHEEL_PREDICTOR_MAX_LOADED_VERSIONS={limit} "
                    f"and every loaded version ({', '.join(self.loaded)}) is pinned (the default and "
                    f"FLYWHEEL_PREDICTOR_VERSIONS) or still loading; raise the limit or pin fewer versions"
                )
            self.unload(victim, f"least recently used, making room for {version} under MAX_LOADED_VERSIONS={limit}")

    def unload(self, version: str, why: str) -> None:
        """Close a loaded version's session and inference threads and retire its metric series."""
        model = self._models.pop(version)
        del self._used[version]
        started = perf_counter()
        summary = model.summary()
        model.close()
        VERSION_LOADS.labels(self.name, "unloaded").inc()
        LOADED_VERSIONS.labels(self.name).set(len(self._models))
        log.info(
            "unloaded %s (%s) in %.1f ms; %d of %d versions loaded: %s",
            summary,
            why,
            (perf_counter() - started) * 1000,
            len(self._models),
            self.settings.max_loaded_versions,
            ", ".join(self.loaded),
        )

    def sweep(self, now: float | None = None) -> None:
        """Unload the versions that are not pinned and had no request for UNLOAD_IDLE_S (0: never)."""
        idle = self.settings.unload_idle_s
        if not idle:
            return
        now = monotonic() if now is None else now
        for version in [v for v, used in self._used.items() if v not in self.pinned and now - used >= idle]:
            self.unload(version, f"no request for {now - self._used[version]:.0f}s, UNLOAD_IDLE_S={idle:g}")

    async def poll(self) -> None:
        """VERSIONS=all: load the versions published since the last look (each once; later on demand)."""
        published = self.published()
        new = [v for v in published if v not in self._seen]
        self._seen.update(published)
        for version in new:
            if version in self._models:
                continue
            try:
                await self.load(version, "published while running, VERSIONS=all")
            except PredictorError as e:
                if version not in self._failures:  # a failed load was logged where it failed
                    log.warning("did not load model=%s version=%s published while running: %s", self.name, version, e)

    # -- start-up and the worker's lifetime ----------------------------------------------------------
    def load_at_start(self) -> None:
        """Load what VERSIONS asks for before serving (the default already is).

        Raises ConfigError when the pinned versions exceed MAX_LOADED_VERSIONS and ModelLoadError when a
        listed version cannot be loaded: like the default, a pinned version is served whole or not at all.
        """
        s = self.settings
        limit = s.max_loaded_versions
        if len(self.pinned) > limit:
            raise ConfigError(
                f"Config 'FLYWHEEL_PREDICTOR_MAX_LOADED_VERSIONS' has value '{limit}': expected at least "
                f"{len(self.pinned)}: the default ({self.default.version}) and VERSIONS={s.versions} stay loaded"
            )
        VERSION_LOADS.labels(self.name, "loaded").inc()  # the default, loaded before this set existed
        LOADED_VERSIONS.labels(self.name).set(len(self._models))
        published = self.published()
        self._seen.update(published)
        for version in sorted(s.listed_versions, key=_number):
            if version in self._models:
                continue
            started = perf_counter()
            try:
                model = self._open(version)
            except ModelLoadError as e:
                raise ModelLoadError(f"FLYWHEEL_PREDICTOR_VERSIONS lists {version}, which cannot be served: {e}") from e
            self._add(model, "listed in VERSIONS", started)
        if not s.load_all:
            return
        others = [v for v in reversed(published) if v not in self._models]
        room = limit - len(self._models)
        for version in others[:room]:
            started = perf_counter()
            try:
                model = self._open(version)
            except Exception as e:  # not pinned: log it, serve the rest
                self._failed(version, e, "published, VERSIONS=all", started)
                continue
            self._add(model, "published, VERSIONS=all", started)
        if others[room:]:
            log.info(
                "not loaded at start-up (MAX_LOADED_VERSIONS=%d): model=%s versions %s; "
                "they load when a request names them",
                limit,
                self.name,
                ", ".join(sorted(others[room:], key=_number)),
            )

    def hand_over(self) -> None:
        """Before spawning workers: the parent serves nothing, so its gauges go to 0 and the pod's "max"
        over processes shows what the workers hold."""
        for model in self._models.values():
            if model.metrics is not None:
                model.metrics.retire()
        LOADED_VERSIONS.labels(self.name).set(0)

    def start(self) -> None:
        """Start the repository poll and the idle sweep on the running loop (each worker, at ASGI start-up)."""
        LOADED_VERSIONS.labels(self.name).set(len(self._models))  # this worker's own count (the parent's is 0)
        if self._task is None and (self.settings.load_all or self.settings.unload_idle_s > 0):
            self._task = asyncio.get_running_loop().create_task(self._maintain(), name="flywheel-predictor-versions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _maintain(self) -> None:
        interval = self.settings.repo_poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if self.settings.load_all:
                    await self.poll()
                self.sweep()
            except Exception:  # never let one bad look at the repository end the loop
                log.exception("looking after model versions failed; trying again in %gs", interval)
