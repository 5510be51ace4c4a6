"""Builders shared by the tests: small simulated data with a real Feast registry, and one published run.

The expensive parts (simulate, `feast apply`, one training run) happen once per session; tests that
change a model repository work on a copy of it.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from flywheel_trainer import TrainingSet, build_training_set
from flywheel_trainer._feast import keep_feast_metrics_in_memory

REPO_ROOT = Path(__file__).resolve().parents[3]
FEATURE_REPO = REPO_ROOT / "feature_repo"
TEST_EPOCHS = 3


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory):
    """A small simulated history (fixed start, so runs are comparable) applied to a fresh Feast registry."""
    data = tmp_path_factory.mktemp("data")
    subprocess.run(
        [sys.executable, "-m", "flywheel_core.sim", "history", "--out", str(data), "--size", "small", "--start", "2026-01-01"],
        check=True, capture_output=True,
    )
    patch = pytest.MonkeyPatch()
    patch.setenv("FLYWHEEL_DATA_DIR", str(data))
    _feast_apply()
    yield data
    patch.undo()


def _feast_apply() -> None:
    """`feast apply` in this process (a subprocess would import Feast a second time, ~10 s here)."""
    keep_feast_metrics_in_memory()  # as the trainer does before it imports Feast
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    cwd = os.getcwd()  # apply_total chdirs into the repository and imports its modules by bare name
    sys.path.insert(0, str(FEATURE_REPO))
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Feast's own experimental/deprecation notices during apply
            apply_total(load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml"), FEATURE_REPO, skip_source_validation=False)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(FEATURE_REPO))


@pytest.fixture(scope="session")
def training_set(small_data: Path) -> TrainingSet:
    return build_training_set(FEATURE_REPO, small_data)


@dataclass(frozen=True)
class CliRun:
    """One `python -m flywheel_trainer` run in a subprocess with its own HOME and TMPDIR."""

    repo: Path
    returncode: int
    output: str  # stdout and stderr, interleaved as a terminal shows them
    home: Path
    tmp: Path


@pytest.fixture(scope="session")
def cli_run(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """The CLI as a user runs it, publishing `fraud` once (with --if-empty, on an empty repo).

    A subprocess, so what it prints at interpreter exit is seen; every warning is shown (-W default).
    """
    repo, home, tmp = (tmp_path_factory.mktemp(name) for name in ("model_repo", "home", "tmp"))
    run = subprocess.run(
        [sys.executable, "-W", "default", "-m", "flywheel_trainer", "train", "--feature-repo", str(FEATURE_REPO),
         "--data", str(small_data), "--model-repo", str(repo), "--model", "fraud", "--if-empty",
         "--epochs", str(TEST_EPOCHS)],
        env={**os.environ, "HOME": str(home), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    return CliRun(repo, run.returncode, run.stdout, home, tmp)


@pytest.fixture(scope="session")
def published_repo(cli_run: CliRun) -> Path:
    """A model repository into which the CLI has published `fraud` once."""
    assert cli_run.returncode == 0, cli_run.output
    return cli_run.repo


@pytest.fixture(scope="session")
def version_dir(published_repo: Path) -> Path:
    return published_repo / "fraud" / "v1"
