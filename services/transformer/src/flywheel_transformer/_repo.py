"""Reading the served model's metadata from the model repository, at start-up or as soon as it appears.

Loading verifies the version's digests (flywheel_core.model_repo.load_version) and checks the metadata
against this transformer's schema. When nothing is published yet, the transformer still starts (live,
not ready) and a daemon thread looks again every few seconds: in a cluster the transformer may start
before the training job has published, and crash-looping until then helps nobody.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from flywheel_core import model_repo

from ._errors import ModelMetadataError
from ._spec import ModelSpec, spec_from_metadata

log = logging.getLogger("flywheel_transformer.repo")


def load_spec(repo: Path, model: str, version: str = "latest") -> ModelSpec:
    """The spec of `version` of `model`; raises model_repo.ModelRepoError or ModelMetadataError."""
    path = model_repo.resolve(Path(repo), model, version)
    loaded = model_repo.load_version(path)
    return spec_from_metadata(loaded.metadata, where=str(path / model_repo.METADATA_FILE))


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
