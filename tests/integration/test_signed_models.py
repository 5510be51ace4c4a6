"""Signed model metadata on real processes: with FLYWHEEL_MODEL_SIGNING_KEY_FILE set, the predictor and the
transformer serve a version the trainer's `publish` signed, and refuse to start on one that someone who can
write the model volume (but lacks the key) rewrote with matching sha256 digests, the attack digests alone
cannot catch (flywheel_core.model_repo; docs/security.md)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from flywheel_core import model_repo as repo

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from localstack import Service, Stack, StackError, free_port, venv_python  # noqa: E402

KEY = "a" * 64


@pytest.fixture
def signed_repo(tmp_path: Path, model_repo: Path) -> tuple[Path, Path]:
    """A copy of the session's v1, published again with a signing key (as the trainer does with the key set)."""
    key_file = tmp_path / "signing-key"
    key_file.write_text(KEY + "\n")
    keys = repo.SigningKeys.from_file(key_file)
    source = model_repo / "fraud" / "v1"
    signed = tmp_path / "repo"
    staging = repo.staging_path(signed, "fraud")
    shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(repo.METADATA_FILE))
    metadata = {k: v for k, v in json.loads((source / repo.METADATA_FILE).read_text()).items()
                if k not in ("model", "version", "files")}
    repo.publish(staging, signed, "fraud", metadata, keys=keys)
    return signed, key_file


def _services(signed: Path, key_file: Path) -> list[Service]:
    predictor, transformer = free_port(), free_port()
    env = {"FLYWHEEL_MODEL_SIGNING_KEY_FILE": str(key_file)}
    return [
        Service("predictor", [venv_python("services/predictor"), "-m", "flywheel_predictor"],
                {**env, "FLYWHEEL_PREDICTOR_MODEL_REPO": str(signed), "FLYWHEEL_PREDICTOR_HTTP_HOST": "127.0.0.1",
                 "FLYWHEEL_PREDICTOR_HTTP_PORT": str(predictor)},
                f"http://127.0.0.1:{predictor}/v2/health/ready"),
        Service("transformer", [venv_python("services/transformer"), "-m", "flywheel_transformer"],
                {**env, "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(signed), "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
                 "FLYWHEEL_TRANSFORMER_HTTP_PORT": str(transformer),
                 "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": f"http://127.0.0.1:{predictor}"},
                f"http://127.0.0.1:{transformer}/v2/health/ready"),
    ]


def test_a_signed_version_is_served(signed_repo, tmp_path):
    signed, key_file = signed_repo
    with Stack(_services(signed, key_file), tmp_path / "logs", ready_timeout_s=90) as stack:
        assert all(service.ready_after_s is not None for service in stack.services)


@pytest.mark.parametrize("name", ["predictor", "transformer"])
def test_a_version_rewritten_without_the_key_is_refused(signed_repo, tmp_path, name):
    signed, key_file = signed_repo
    version = signed / "fraud" / "v1"
    # The attacker swaps the served model and fixes its digest: every sha256 in metadata.json matches again.
    (version / "model.fp32.onnx").write_bytes((version / "model.fp16.onnx").read_bytes())
    metadata = json.loads((version / repo.METADATA_FILE).read_text())
    metadata["files"]["model.fp32.onnx"] = repo.sha256_file(version / "model.fp32.onnx")
    (version / repo.METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    repo.load_version(version, keys=None)  # digests alone accept it

    [service] = [s for s in _services(signed, key_file) if s.name == name]
    with pytest.raises(StackError, match=r"exited|not ready") as refused:
        with Stack([service], tmp_path / "logs", ready_timeout_s=60):
            pass
    assert "signature" in str(refused.value), str(refused.value)
