import json
import re

import pytest

from flywheel_core import model_repo

# The smallest metadata the contract accepts: what serving reads (input, output, a variant).
METADATA = {
    "feature_service": "fraud_v1",
    "input": {"name": "input", "datatype": "FP32", "shape": [-1, 2],
              "columns": [{"name": "amount_log", "kind": "numeric"}, {"name": "channel", "kind": "hashed", "buckets": 16}]},
    "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
    "defaults": {"amount_log": 4.2},
    "variants": {"fp32": {"file": "model.fp32.onnx", "published": True}},
}


def publish_one(repo, content=b"onnx-bytes", metadata=None):
    staging = model_repo.staging_path(repo, "fraud")
    (staging / "model.fp32.onnx").write_bytes(content)
    return model_repo.publish(staging, repo, "fraud", metadata=metadata or METADATA)


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


def test_the_published_metadata_is_typed_and_versioned(tmp_path):
    loaded = model_repo.load_version(publish_one(tmp_path))
    spec = loaded.spec
    assert spec.schema_version == model_repo.SCHEMA_VERSION == loaded.metadata["schema_version"]
    assert (spec.model, spec.version, spec.input.shape) == ("fraud", "v1", [-1, 2])
    assert spec.numeric_columns() == ["amount_log"] and spec.input.columns[1].buckets == 16
    assert list(spec.published_variants()) == ["fp32"]


def test_a_schema_version_this_code_cannot_read_is_a_clear_error(tmp_path):
    version = publish_one(tmp_path)
    document = json.loads((version / "metadata.json").read_text())
    (version / "metadata.json").write_text(json.dumps({**document, "schema_version": 99}))
    with pytest.raises(model_repo.ModelMetadataError, match="schema_version 99 is not one this code reads"):
        model_repo.load_version(version)


def test_a_file_from_before_the_schema_version_reads_as_version_1_and_keeps_unknown_fields(tmp_path):
    version = publish_one(tmp_path, metadata={**METADATA, "future_field": {"x": 1}})
    document = json.loads((version / "metadata.json").read_text())
    del document["schema_version"]
    (version / "metadata.json").write_text(json.dumps(document))
    loaded = model_repo.load_version(version)
    assert loaded.spec.schema_version == 1 and loaded.spec.model_extra == {"future_field": {"x": 1}}


@pytest.mark.parametrize(("broken", "named"), [
    ({"input": None}, "input"),
    ({"output": {"name": "p", "datatype": "FP33", "shape": [-1, 1]}}, "output.datatype"),
    ({"defaults": {"amount_log": "high"}}, "defaults.amount_log"),
    ({"defaults": {"amount_log": "1.5"}}, "defaults.amount_log"),
    ({"defaults": {"amount_log": True}}, "defaults.amount_log"),
    ({"defaults": {"amount_log": float("nan")}}, "defaults.amount_log"),
    ({"defaults": {"amount_log": float("inf")}}, "defaults.amount_log"),
    ({"variants": {"fp32": {"published": True}}}, "variants.fp32.file"),
])
def test_metadata_that_does_not_fit_the_contract_is_never_published(tmp_path, broken, named):
    with pytest.raises(model_repo.ModelMetadataError, match=re.escape(named)):
        publish_one(tmp_path, metadata={**METADATA, **broken})
    assert model_repo.list_versions(tmp_path, "fraud") == []


def test_a_reader_refuses_metadata_edited_after_publishing_naming_the_field(tmp_path):
    version = publish_one(tmp_path)
    document = json.loads((version / "metadata.json").read_text())
    document["input"]["shape"] = []
    (version / "metadata.json").write_text(json.dumps(document))
    with pytest.raises(model_repo.ModelMetadataError, match="input.shape"):
        model_repo.load_version(version, verify=False)


KEY = b"k" * 32
OTHER = b"o" * 32


def _keys(tmp_path, *keys):
    path = tmp_path / "signing-key"
    path.write_bytes(b"\n".join(keys) + b"\n")
    return model_repo.SigningKeys.from_file(path)


def test_with_a_signing_key_a_published_version_is_signed_and_loads(tmp_path):
    keys = _keys(tmp_path, KEY)
    staging = model_repo.staging_path(tmp_path, "fraud")
    (staging / "model.fp32.onnx").write_bytes(b"onnx")
    version = model_repo.publish(staging, tmp_path, "fraud", METADATA, keys=keys)
    signature = json.loads((version / model_repo.SIGNATURE_FILE).read_text())
    assert signature["algorithm"] == "hmac-sha256" and signature["key_id"] == model_repo.SigningKeys.key_id(KEY)
    assert model_repo.SIGNATURE_FILE not in json.loads((version / "metadata.json").read_text())["files"]
    assert model_repo.load_version(version, keys=keys).version == "v1"


def _tamper(version, change):
    """What someone who can write the model volume but lacks the key can do: change a file and rewrite
    metadata.json with matching digests."""
    (version / "model.fp32.onnx").write_bytes(change)
    document = json.loads((version / "metadata.json").read_text())
    document["files"]["model.fp32.onnx"] = model_repo.sha256_file(version / "model.fp32.onnx")
    (version / "metadata.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def test_a_version_rewritten_with_matching_digests_but_no_key_is_refused(tmp_path):
    keys = _keys(tmp_path, KEY)
    staging = model_repo.staging_path(tmp_path, "fraud")
    (staging / "model.fp32.onnx").write_bytes(b"onnx")
    version = model_repo.publish(staging, tmp_path, "fraud", METADATA, keys=keys)
    _tamper(version, b"evil model")
    model_repo.load_version(version, keys=None)  # digests alone cannot tell: the reason for signing
    with pytest.raises(model_repo.SignatureError, match="does not match metadata.json"):
        model_repo.load_version(version, keys=keys)


def test_an_unsigned_version_is_refused_when_a_key_is_configured(tmp_path):
    version = publish_one(tmp_path)  # FLYWHEEL_MODEL_SIGNING_KEY_FILE unset here: unsigned
    assert not (version / model_repo.SIGNATURE_FILE).exists()
    with pytest.raises(model_repo.SignatureError, match="no metadata.json.sig"):
        model_repo.load_version(version, keys=_keys(tmp_path, KEY))


def test_rotation_the_first_key_signs_and_every_key_verifies(tmp_path):
    staging = model_repo.staging_path(tmp_path, "fraud")
    (staging / "model.fp32.onnx").write_bytes(b"onnx")
    old = model_repo.publish(staging, tmp_path, "fraud", METADATA, keys=_keys(tmp_path, OTHER))
    rotated = _keys(tmp_path, KEY, OTHER)
    model_repo.load_version(old, keys=rotated)
    with pytest.raises(model_repo.SignatureError, match=model_repo.SigningKeys.key_id(OTHER)):
        model_repo.load_version(old, keys=_keys(tmp_path, KEY))


def test_the_key_comes_from_the_environment_by_default(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv(model_repo.SIGNING_KEY_ENV, str(key_file))
    version = publish_one(tmp_path)
    assert (version / model_repo.SIGNATURE_FILE).is_file()
    model_repo.load_version(version)
    key_file.write_bytes(OTHER + b"\n")
    with pytest.raises(model_repo.SignatureError):
        model_repo.load_version(version)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"short\n"])
def test_an_empty_or_weak_key_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(model_repo.ModelRepoError, match="empty|shorter than 32 bytes"):
        model_repo.SigningKeys.from_file(path)


DOMAIN = {
    "rows": 3,
    "vocabularies": {"channel": ["ecom", "pos"], "country": ["DE", "US"]},
    "ranges": {"amount": {"min": 0.5, "max": 950.0}},
}


def test_the_training_domain_is_published_and_read_back_typed(tmp_path):
    version = publish_one(tmp_path, metadata={**METADATA, "training_domain": DOMAIN})
    domain = model_repo.load_version(version).spec.training_domain
    assert domain is not None and domain.rows == 3
    assert domain.vocabularies["country"] == ["DE", "US"]
    assert (domain.ranges["amount"].min, domain.ranges["amount"].max) == (0.5, 950.0)


def test_metadata_without_a_training_domain_is_still_schema_version_1_and_means_no_unseen_checks(tmp_path):
    loaded = model_repo.load_version(publish_one(tmp_path))
    assert loaded.spec.schema_version == 1 and loaded.spec.training_domain is None


@pytest.mark.parametrize(("domain", "named"), [
    ({**DOMAIN, "ranges": {"amount": {"min": 2.0, "max": 1.0}}}, "training_domain.ranges.amount"),
    ({**DOMAIN, "ranges": {"amount": {"min": 0.0, "max": float("inf")}}}, "training_domain.ranges.amount.max"),
    ({**DOMAIN, "vocabularies": {"country": "US"}}, "training_domain.vocabularies.country"),
    ({"vocabularies": {}}, "training_domain.rows"),
])
def test_a_training_domain_that_does_not_fit_the_contract_is_never_published(tmp_path, domain, named):
    with pytest.raises(model_repo.ModelMetadataError, match=re.escape(named)):
        publish_one(tmp_path, metadata={**METADATA, "training_domain": domain})


def _gates(passed: bool) -> dict:
    check = {"name": "pr_auc_gain", "passed": passed, "value": 0.01 if passed else -0.02, "threshold": 0.0,
             "values": {"candidate": 0.7, "stable": 0.69}, "reason": "CI lower bound above 0.0" if passed else "CI lower bound -0.02 <= 0.0"}
    return {"status": "candidate" if passed else "rejected", "passed": passed, "stable_version": "v1", "checks": [check]}


def test_gates_are_published_and_read_back_typed(tmp_path):
    loaded = model_repo.load_version(publish_one(tmp_path, metadata={**METADATA, "gates": _gates(False)}))
    gates = loaded.spec.gates
    assert gates is not None and loaded.spec.rejected and gates.stable_version == "v1"
    assert [check.name for check in gates.failed()] == ["pr_auc_gain"]
    assert gates.summary() == "pr_auc_gain: CI lower bound -0.02 <= 0.0"


def test_metadata_without_gates_reads_as_published_before_them_and_is_not_rejected(tmp_path):
    loaded = model_repo.load_version(publish_one(tmp_path))
    assert loaded.spec.schema_version == 1 and loaded.spec.gates is None and not loaded.spec.rejected


@pytest.mark.parametrize(("gates", "named"), [
    ({**_gates(False), "status": "candidate"}, "gates"),  # failed checks cannot make a candidate
    ({**_gates(True), "passed": False}, "gates"),  # passed must say what the checks say
    ({**_gates(True), "status": "approved"}, "gates.status"),
    ({**_gates(True), "stable_version": "latest"}, "gates.stable_version"),  # the resolved version is recorded
])
def test_gates_that_contradict_themselves_are_never_published(tmp_path, gates, named):
    with pytest.raises(model_repo.ModelMetadataError, match=re.escape(named)):
        publish_one(tmp_path, metadata={**METADATA, "gates": gates})


def test_latest_skips_versions_published_as_rejected(tmp_path):
    publish_one(tmp_path)  # v1: before gates
    publish_one(tmp_path, b"v2", metadata={**METADATA, "gates": _gates(True)})
    publish_one(tmp_path, b"v3", metadata={**METADATA, "gates": _gates(False)})
    assert model_repo.latest_accepted(tmp_path, "fraud") == "v2"
    assert model_repo.resolve(tmp_path, "fraud").name == "v2"
    assert model_repo.resolve(tmp_path, "fraud", "v3").name == "v3"  # named, a rejected version is still readable


def test_latest_is_a_clear_error_when_every_version_was_rejected(tmp_path):
    publish_one(tmp_path, metadata={**METADATA, "gates": _gates(False)})
    assert model_repo.latest_accepted(tmp_path, "fraud") is None
    with pytest.raises(model_repo.VersionNotFound, match="rejected by its gates"):
        model_repo.resolve(tmp_path, "fraud")
