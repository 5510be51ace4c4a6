"""The server refuses to start, with one line saying why, rather than serve a wrong or tampered model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tiny_model
from conftest import run_to_exit


@pytest.fixture
def own_repo(repo: Path, tmp_path: Path) -> Path:
    """A private copy of the shared repo that a test may damage."""
    target = tmp_path / "model_repo"
    shutil.copytree(repo, target)
    return target


def test_a_tampered_model_file_refuses_to_load(own_repo: Path) -> None:
    with open(own_repo / "fraud" / "v1" / "model.fp32.onnx", "ab") as handle:
        handle.write(b"\0")
    result = run_to_exit(own_repo)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "model.fp32.onnx has sha256" in result.stderr and "was modified" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_a_missing_model_file_refuses_to_load(own_repo: Path) -> None:
    (own_repo / "fraud" / "v1" / "model.fp32.onnx").unlink()
    result = run_to_exit(own_repo)
    assert result.returncode == 1
    assert "missing" in result.stderr


def test_an_empty_repo_refuses_naming_what_to_do(tmp_path: Path) -> None:
    result = run_to_exit(tmp_path)
    assert result.returncode == 1
    assert "no published version of model 'fraud'" in result.stderr


def test_an_unpublished_version_refuses_listing_the_published_ones(repo: Path) -> None:
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_MODEL_VERSION": "v7"})
    assert result.returncode == 1
    assert "no version 'v7'" in result.stderr and "published: v1" in result.stderr


def test_a_listed_version_that_is_not_published_refuses_naming_the_setting(repo: Path) -> None:
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_VERSIONS": "v7"})
    assert result.returncode == 1
    assert "FLYWHEEL_PREDICTOR_VERSIONS lists v7" in result.stderr and "published: v1" in result.stderr


def test_a_variant_that_is_not_published_refuses(repo: Path) -> None:
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_VARIANT": "int8"})
    assert result.returncode == 1
    assert "FLYWHEEL_PREDICTOR_VARIANT" in result.stderr


def test_a_provider_this_build_lacks_refuses(repo: Path) -> None:
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_PROVIDERS": "CUDAExecutionProvider"})
    assert result.returncode == 1
    assert "FLYWHEEL_PREDICTOR_PROVIDERS" in result.stderr and "not available" in result.stderr


def test_a_bad_setting_exits_2_naming_it(repo: Path) -> None:
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_WORKERS": "zero"})
    assert result.returncode == 2
    assert "Config 'FLYWHEEL_PREDICTOR_WORKERS' has value 'zero'" in result.stderr


def test_a_model_whose_tensors_differ_from_its_metadata_refuses(tmp_path: Path) -> None:
    staging = tiny_model.model_repo.staging_path(tmp_path, "fraud")
    tiny_model.build(staging / "model.fp32.onnx", input_name="features")
    tiny_model.model_repo.publish(staging, tmp_path, "fraud", tiny_model.metadata())
    result = run_to_exit(tmp_path)
    assert result.returncode == 1
    assert "['features']" in result.stderr and "declares input 'input'" in result.stderr
