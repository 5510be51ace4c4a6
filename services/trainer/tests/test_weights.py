"""Each version's weights as .npz (digested, rebuildable) and the warm start from them (stateful retraining)."""

import json
import shutil

import numpy as np
import pytest
import torch

from flywheel_core import model_repo, schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_trainer import ConfigError, DataError, load_settings, main, train_and_publish
from flywheel_trainer._train import predict_probability
from flywheel_trainer._variants import run_onnx
from flywheel_trainer._weights import WEIGHTS_FILES, load_warm_start, read_weights, rebuild

from conftest import FEATURE_REPO

FAST = dict(latency_repeats=5, latency_warmup=1, gate_bootstrap=50)


def _copy(published_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(published_repo, repo)
    return repo


def _edit_metadata(version_dir, edit):
    path = version_dir / "metadata.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_a_version_publishes_both_candidates_weights_digested_and_they_rebuild_the_served_graph(version_dir):
    version = model_repo.load_version(version_dir)
    files, described = version.spec.files, version.metadata["lineage"]["training"]["weights"]
    assert described["served"] == version.metadata["metrics"]["selected"]
    for candidate, name in WEIGHTS_FILES.items():
        assert described[candidate]["file"] == name
        assert files[name] == model_repo.sha256_file(version_dir / name)
    reference = read_parquet(version_dir / "drift_reference.parquet")
    x = reference.drop(columns="probability").to_numpy(np.float32)
    served = described[described["served"]]
    module = rebuild(read_weights(version_dir / served["file"]), served["architecture"])
    assert np.max(np.abs(predict_probability(module, x) - run_onnx(version_dir / "model.fp32.onnx", x))) <= 1e-5


def test_weights_that_do_not_fit_their_architecture_are_refused(version_dir):
    described = model_repo.load_version(version_dir).metadata["lineage"]["training"]["weights"]["torch"]
    state = read_weights(version_dir / described["file"])
    with pytest.raises(DataError, match="do not fit a FraudNet"):
        rebuild(state, {**described["architecture"], "hidden": described["architecture"]["hidden"] * 2})
    with pytest.raises(DataError, match="lack the tensor"):
        rebuild({k: v for k, v in state.items() if k != "mean"}, described["architecture"])


def test_a_warm_start_holds_every_tensor_of_the_parent_before_any_step(published_repo, version_dir):
    warm = load_warm_start(published_repo, "fraud", "v1", load_settings())
    assert warm is not None and warm.version == "v1"
    published = read_weights(version_dir / WEIGHTS_FILES["torch"])
    loaded = warm.model.state_dict()
    assert set(loaded) == set(published)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, torch.from_numpy(published[name])), name
    assert warm.sha256 == model_repo.load_version(version_dir).spec.files[WEIGHTS_FILES["torch"]]


def test_no_warm_start_is_a_cold_start(published_repo):
    assert load_warm_start(published_repo, "fraud", "", load_settings()) is None


def test_a_warm_start_with_another_architecture_exits_2_naming_the_setting(published_repo, small_data, tmp_path,
                                                                             monkeypatch, caplog):
    repo = _copy(published_repo, tmp_path)
    monkeypatch.setenv("FLYWHEEL_TRAINER_WARM_START", "v1")
    monkeypatch.setenv("FLYWHEEL_TRAINER_HIDDEN", "32")
    code = main(["train", "--feature-repo", str(FEATURE_REPO), "--data", str(small_data), "--model-repo", str(repo),
                 "--model", "fraud", "--epochs", "1"])
    assert code == 2
    assert "Config 'FLYWHEEL_TRAINER_WARM_START' has value 'v1'" in caplog.text and "hidden 64 there, 32 here" in caplog.text
    assert model_repo.list_versions(repo, "fraud") == ["v1"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["lineage"]["training"].pop("weights"), "published without weights"),
    (lambda d: d["input"]["columns"].pop(), "input columns differ"),
    (lambda d: d["input"]["columns"][0].update(name="renamed"), "input columns differ"),
])
def test_a_parent_without_weights_or_of_another_input_schema_is_refused(published_repo, tmp_path, edit, message):
    repo = _copy(published_repo, tmp_path)
    _edit_metadata(repo / "fraud" / "v1", edit)
    with pytest.raises(ConfigError, match=rf"FLYWHEEL_TRAINER_WARM_START.*{message}"):
        load_warm_start(repo, "fraud", "v1", load_settings())


def test_a_warm_start_from_a_version_that_is_not_there_is_a_config_error(published_repo):
    with pytest.raises(ConfigError, match="FLYWHEEL_TRAINER_WARM_START' has value 'v9'"):
        load_warm_start(published_repo, "fraud", "v9", load_settings())


@pytest.mark.parametrize("value", ["latest", "3", "v"])
def test_a_warm_start_that_is_not_a_version_name_is_refused(value):
    with pytest.raises(ConfigError, match="WARM_START"):
        load_settings(warm_start=value)


def test_tampered_weights_are_refused(published_repo, tmp_path):
    repo = _copy(published_repo, tmp_path)
    weights = repo / "fraud" / "v1" / WEIGHTS_FILES["torch"]
    state = read_weights(weights)
    state["mlp.0.weight"] = state["mlp.0.weight"] + 0.5  # a well-formed archive, other numbers
    np.savez(weights, **state)
    with pytest.raises(DataError, match="cannot be trusted.*sha256"):
        load_warm_start(repo, "fraud", "v1", load_settings())


def test_a_warm_started_run_fine_tunes_the_parent_and_records_it(published_repo, training_set, tmp_path):
    repo = _copy(published_repo, tmp_path)
    settings = load_settings(epochs=1, warm_start="v1", stable_version="v1", serve="torch", gate_min_pr_auc_gain=-1.0,
                             gate_max_ece_increase=1.0, gate_max_slice_pr_auc_drop=1.0, **FAST)
    version = model_repo.load_version(train_and_publish(training_set, repo, "fraud", settings))
    lineage = version.metadata["lineage"]
    assert lineage["run"]["warm_start"] == "v1" and lineage["run"]["parent"] == "v1"
    training = lineage["training"]
    v1 = model_repo.load_version(repo / "fraud" / "v1")
    assert training["mode"] == "stateful"
    assert training["warm_start"]["version"] == "v1"
    assert training["warm_start"]["sha256"] == v1.spec.files[WEIGHTS_FILES["torch"]]
    assert [entry["epoch"] for entry in training["history"]] == [0, 1]
    assert training["warm_start"]["validation_pr_auc_before"] == training["history"][0]["validation_pr_auc"]
    assert training["compute"]["torch"]["cpu_seconds"] > 0
    # Fine-tuning starts from the parent's numeric statistics, whatever this run's rows would give.
    parent, child = (read_weights(v.path / WEIGHTS_FILES["torch"]) for v in (v1, version))
    for name in ("log_mask", "mean", "std"):
        assert np.array_equal(parent[name], child[name]), name
    assert "Fine-tuned from v1's torch weights" in (version.path / "MODEL_CARD.md").read_text()
    assert schema.INPUT_DIM == len(version.spec.input.columns)
