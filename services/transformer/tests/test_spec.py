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


def with_version(**overrides):
    return {"model": "fraud", "version": "v1", **metadata(**overrides)}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"input": {"name": "input", "columns": schema.COLUMNS[::-1]}}, "differ from this transformer's"),
        ({"input": {"name": "input", "columns": schema.COLUMNS[:-1]}}, "differ"),
        ({"input": {"name": "input", "columns": schema.COLUMNS, "datatype": "FP16"}}, "FP32"),
        ({"feature_service": "fraud_v0"}, "feature service 'fraud_v0'"),
        ({"defaults": {"txn_count_1h": "many"}}, "defaults.txn_count_1h"),
    ],
)
def test_metadata_that_does_not_fit_this_transformer_is_refused(overrides, words):
    with pytest.raises(ModelMetadataError) as caught:
        spec_from_metadata(with_version(**overrides))
    assert words in str(caught.value)


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
