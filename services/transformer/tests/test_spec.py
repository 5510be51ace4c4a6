import json
import logging
import threading
import time

import pytest

from flywheel_core import model_repo, schema
from flywheel_transformer import ModelMetadataError
from flywheel_transformer._repo import SpecWatcher, load_spec
from flywheel_transformer._spec import spec_from_metadata

from conftest import DEFAULTS, metadata, publish_version


def test_a_published_version_loads_with_its_defaults_and_tensor_names(repo):
    spec = load_spec(repo, "fraud")
    assert (spec.model, spec.version) == ("fraud", "v1")
    assert spec.defaults == DEFAULTS
    assert (spec.input_name, spec.output_name) == ("input", "probability")
    assert list(spec.column_names) == [c["name"] for c in schema.COLUMNS]


def test_latest_is_the_highest_published_version(repo):
    publish_version(repo, defaults={"txn_count_1h": 99.0})
    assert load_spec(repo, "fraud").version == "v2"
    assert load_spec(repo, "fraud", "v1").version == "v1"


def test_a_modified_published_file_is_refused(repo):
    (repo / "fraud" / "v1" / "model.fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(model_repo.DigestMismatch):
        load_spec(repo, "fraud")


def test_nothing_published_is_version_not_found(tmp_path):
    with pytest.raises(model_repo.VersionNotFound):
        load_spec(tmp_path, "fraud")


def contract(**overrides):
    """The version's metadata as every reader gets it: validated against the typed contract."""
    return model_repo.parse_metadata({"model": "fraud", "version": "v1", **metadata(**overrides)})


def tensor(**overrides):
    return {
        "name": "input",
        "datatype": "FP32",
        "shape": [-1, schema.INPUT_DIM],
        "columns": schema.COLUMNS,
        **overrides,
    }


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"input": tensor(columns=schema.COLUMNS[::-1])}, "differ from this transformer's"),
        ({"input": tensor(columns=schema.COLUMNS[:-1])}, "differ"),
        ({"input": tensor(columns=[])}, "trained on 0 input columns"),
        ({"input": tensor(datatype="FP16")}, "FP32"),
        ({"input": tensor(shape=[-1, schema.INPUT_DIM + 1])}, "FP32 [-1, "),
        ({"feature_service": "fraud_v0"}, "feature service 'fraud_v0'"),
    ],
)
def test_metadata_that_does_not_fit_this_transformer_is_refused(overrides, words):
    with pytest.raises(ModelMetadataError) as caught:
        spec_from_metadata(contract(**overrides))
    assert words in str(caught.value)


def test_metadata_that_does_not_fit_the_contract_is_refused_at_load_naming_the_field(repo):
    publish_version(repo)  # v2, then made unreadable as a contract (digests still match: only metadata changed)
    path = repo / "fraud" / "v2" / model_repo.METADATA_FILE
    document = json.loads(path.read_text())
    document["defaults"]["txn_count_1h"] = "many"
    path.write_text(json.dumps(document))
    with pytest.raises(model_repo.ModelMetadataError, match="defaults.txn_count_1h"):
        load_spec(repo, "fraud", "v2")


def test_the_typed_metadata_gives_the_spec_its_names_domain_and_platform():
    domain = {"rows": 3, "vocabularies": {"country": ["DE", "FR"]}, "ranges": {"amount": {"min": 1.0, "max": 9.0}}}
    spec = spec_from_metadata(contract(training_domain=domain))
    assert (spec.model, spec.version, spec.feature_service) == ("fraud", "v1", schema.FEATURE_SERVICE)
    assert spec.predictor_platform == "onnxruntime_onnx"
    assert spec.seen is not None and spec.seen.vocabularies["country"] == frozenset({"DE", "FR"})
    assert spec.seen.ranges["amount"] == (1.0, 9.0)
    assert spec_from_metadata(contract()).seen is None


def test_the_watcher_hands_over_the_version_once_it_is_published(tmp_path, caplog):
    loaded = []
    done = threading.Event()
    watcher = SpecWatcher(tmp_path, "fraud", "latest", 0.05, lambda spec: (loaded.append(spec), done.set()))
    caplog.set_level(logging.WARNING, "flywheel_transformer")
    watcher.start()
    try:
        deadline = time.monotonic() + 10  # a bound on a stuck watcher, not a claim about speed
        while "not loadable yet" not in caplog.text:  # a poll found nothing to load...
            assert time.monotonic() < deadline, "the watcher never looked at the repository"
            time.sleep(0.01)
        assert not done.is_set()  # ...and handed nothing over
        publish_version(tmp_path)
        assert done.wait(5)
    finally:
        watcher.stop()
    assert [s.version for s in loaded] == ["v1"]
