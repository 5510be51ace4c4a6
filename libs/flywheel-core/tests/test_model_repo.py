import json

import pytest

from flywheel_core import model_repo


def publish_one(repo, content=b"onnx-bytes"):
    staging = model_repo.staging_path(repo, "fraud")
    (staging / "model.fp32.onnx").write_bytes(content)
    return model_repo.publish(staging, repo, "fraud", metadata={"feature_service": "fraud_v1"})


def test_publish_records_digests_and_numbers_versions(tmp_path):
    first = publish_one(tmp_path)
    second = publish_one(tmp_path, b"other")
    assert (first.name, second.name) == ("v1", "v2")
    loaded = model_repo.load_version(model_repo.resolve(tmp_path, "fraud"))
    assert loaded.version == "v2"
    assert loaded.metadata["files"]["model.fp32.onnx"] == model_repo.sha256_file(second / "model.fp32.onnx")


def test_tampered_file_is_refused(tmp_path):
    version = publish_one(tmp_path)
    (version / "model.fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(model_repo.DigestMismatch, match="was modified"):
        model_repo.load_version(version)


def test_missing_file_is_refused(tmp_path):
    version = publish_one(tmp_path)
    (version / "model.fp32.onnx").unlink()
    with pytest.raises(model_repo.DigestMismatch, match="missing"):
        model_repo.load_version(version)


def test_unknown_version_names_what_is_published(tmp_path):
    publish_one(tmp_path)
    with pytest.raises(model_repo.VersionNotFound, match="published: v1"):
        model_repo.resolve(tmp_path, "fraud", "v9")
    with pytest.raises(model_repo.VersionNotFound, match="train one first"):
        model_repo.resolve(tmp_path, "other")


def test_staging_directories_are_not_versions(tmp_path):
    model_repo.staging_path(tmp_path, "fraud")
    assert model_repo.list_versions(tmp_path, "fraud") == []


def test_metadata_is_written_last_with_model_and_version(tmp_path):
    version = publish_one(tmp_path)
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["model"] == "fraud" and metadata["version"] == "v1"
    assert "metadata.json" not in metadata["files"]
