"""End to end on small data: Feast retrieval -> training -> variants -> a published, verifiable version."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from flywheel_core import model_repo, schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_trainer import load_settings, main, train_and_publish
from flywheel_trainer._baseline import fit_baseline, predict_baseline
from flywheel_trainer._pipeline import select
from flywheel_trainer._split import time_split
from flywheel_trainer._variants import run_onnx

from conftest import FEATURE_REPO, TEST_EPOCHS


def test_metadata_follows_the_contract(version_dir):
    loaded = model_repo.load_version(version_dir)  # validated against model_repo.ModelMetadata
    meta = loaded.metadata
    assert set(meta) == set(model_repo.ModelMetadata.model_fields)  # every typed field written, nothing else
    assert loaded.spec.schema_version == model_repo.SCHEMA_VERSION and loaded.spec.model_extra == {}
    assert (meta["model"], meta["version"], meta["feature_service"]) == ("fraud", "v1", schema.FEATURE_SERVICE)
    assert meta["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, schema.INPUT_DIM], "columns": schema.COLUMNS}
    assert meta["output"] == {"name": "probability", "datatype": "FP32", "shape": [-1, 1]}
    assert set(meta["defaults"]) == set(schema.NUMERIC_FEATURES)  # publish writes keys sorted
    # A linear baseline that wins is served as fp32 alone (reduced precision saves nothing on it).
    assert set(meta["variants"]) == ({"fp32", "fp16", "int8"} if meta["metrics"]["selected"] == "torch" else {"fp32"})
    for name, variant in meta["variants"].items():
        assert variant["file"] == f"model.{name}.onnx"
        assert isinstance(variant["published"], bool) and "reason" in variant["gate"]
        assert variant["cpu_latency_us"] > 0 and variant["cpu_latency"]["batch_256_us"] > 0
        assert (version_dir / variant["file"]).exists() == variant["published"]
    assert meta["variants"]["fp32"]["published"]
    for model in ("baseline", "torch"):
        assert set(meta["metrics"][model]["test"]) >= {"roc_auc", "pr_auc", "ece", "rows", "positives"}
        assert set(meta["slices"][model]) == {"country", "channel", "merchant_category"}
    lineage = meta["lineage"]
    assert set(lineage["data_files_sha256"]) >= {"transactions.parquet", "card_activity.parquet", "merchant_risk.parquet"}
    assert lineage["seed"] == load_settings().seed and lineage["packages"]["torch"].startswith("2.15.0")
    assert lineage["training"]["epochs_run"] <= TEST_EPOCHS
    # Trained by hand (no RUN_ID): the run link is there, empty; a controller's run fills it in.
    assert lineage["run"] == {"id": None, "trigger": None, "reason": None, "policy": None, "parent": None,
                              "window": None, "warm_start": None}
    assert lineage["training"]["mode"] == "stateless" and lineage["training"]["warm_start"] is None


def test_every_file_is_listed_with_its_digest_and_edits_are_detected(version_dir, tmp_path):
    meta = json.loads((version_dir / "metadata.json").read_text())
    on_disk = {p.name for p in version_dir.iterdir() if p.name != "metadata.json"}
    assert set(meta["files"]) == on_disk >= {"model.fp32.onnx", "drift_reference.parquet", "MODEL_CARD.md"}
    for name, digest in meta["files"].items():
        assert model_repo.sha256_file(version_dir / name) == digest
    tampered = tmp_path / "v1"
    shutil.copytree(version_dir, tampered)
    (tampered / "MODEL_CARD.md").write_text("edited")
    with pytest.raises(model_repo.DigestMismatch):
        model_repo.load_version(tampered)


def test_onnx_variants_reproduce_the_published_probabilities(version_dir):
    meta = model_repo.load_version(version_dir).metadata
    reference = read_parquet(version_dir / "drift_reference.parquet")
    assert list(reference.columns) == [c["name"] for c in schema.COLUMNS] + ["probability"]
    x = reference.drop(columns="probability").to_numpy(np.float32)
    fp32 = run_onnx(version_dir / "model.fp32.onnx", x)
    assert np.max(np.abs(fp32 - reference["probability"].to_numpy())) <= 1e-6
    assert meta["variants"]["fp32"]["gate"]["probability_diff"] <= meta["variants"]["fp32"]["gate"]["atol"] == 1e-5
    for name, variant in meta["variants"].items():
        if variant["published"] and name != "fp32":
            other = run_onnx(version_dir / variant["file"], x)
            assert np.max(np.abs(other - fp32)) <= variant["gate"]["max_probability_diff"]


def test_time_split_boundaries_hold(version_dir, training_set):
    split = model_repo.load_version(version_dir).metadata["lineage"]["split"]
    ts = pd.Timestamp
    assert ts(split["train"]["end"]) < ts(split["validation_start"]) <= ts(split["validation"]["start"])
    assert ts(split["validation"]["end"]) < ts(split["test_start"]) <= ts(split["test"]["start"])
    assert split["train"]["rows"] + split["validation"]["rows"] + split["test"]["rows"] == len(training_set.frame)
    lineage = model_repo.load_version(version_dir).metadata["lineage"]
    assert ts(split["test"]["end"]) <= ts(lineage["cutoff"]) - pd.Timedelta(lineage["label_window"])


def test_the_training_domain_is_what_the_train_split_holds(version_dir, training_set):
    """Serving flags a value outside these as unseen, so they must be the rows the model was fitted on."""
    meta = model_repo.load_version(version_dir).metadata
    domain = model_repo.load_version(version_dir).spec.training_domain
    frame = training_set.frame
    train = frame[frame["event_timestamp"] < pd.Timestamp(meta["lineage"]["split"]["validation_start"])]
    assert domain is not None and domain.rows == len(train) == meta["lineage"]["split"]["train"]["rows"]
    assert set(domain.vocabularies) == set(schema.DOMAIN_CATEGORICALS)
    for name in schema.DOMAIN_CATEGORICALS:
        assert domain.vocabularies[name] == sorted(train[name].astype(str).unique())
    assert (domain.ranges["amount"].min, domain.ranges["amount"].max) == (train["amount"].min(), train["amount"].max())


def test_model_card_states_which_model_is_served_and_why(version_dir):
    meta = model_repo.load_version(version_dir).metadata
    card = (version_dir / "MODEL_CARD.md").read_text()
    served = {"torch": "**torch model**", "baseline": "**logistic-regression baseline**"}[meta["metrics"]["selected"]]
    assert f"This version serves the {served}, chosen on validation PR-AUC" in card
    assert ("The choice held on test." in card) == meta["metrics"]["baseline_gate"]["passed"]
    for heading in ("## Intended use", "## Data", "## Metrics by slice", "## Variants", "## Limits"):
        assert heading in card


def test_if_empty_does_nothing_when_a_version_exists(published_repo, small_data):
    before = model_repo.list_versions(published_repo, "fraud")
    code = main(["train", "--feature-repo", str(FEATURE_REPO), "--data", str(small_data), "--model-repo",
                 str(published_repo), "--model", "fraud", "--if-empty"])
    assert code == 0
    assert model_repo.list_versions(published_repo, "fraud") == before == ["v1"]


def test_settings_from_the_environment_alone_drive_a_run(published_repo, small_data, monkeypatch):
    """`python -m flywheel_trainer` with no arguments, as a Kubernetes Job runs it."""
    for name, value in {"FEATURE_REPO": FEATURE_REPO, "DATA_DIR": small_data, "MODEL_REPO": published_repo,
                        "MODEL": "fraud", "IF_EMPTY": "true"}.items():
        monkeypatch.setenv(f"FLYWHEEL_TRAINER_{name}", str(value))
    assert main([]) == 0
    assert model_repo.list_versions(published_repo, "fraud") == ["v1"]


def test_missing_data_exits_with_the_data_error_code(tmp_path):
    code = main(["train", "--feature-repo", str(FEATURE_REPO), "--data", str(tmp_path / "none"), "--model-repo",
                 str(tmp_path / "repo"), "--model", "fraud"])
    assert code == 3
    assert not (tmp_path / "repo").exists()


def test_republishing_creates_v2_and_leaves_v1_untouched(published_repo, training_set, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(published_repo, repo)
    v1 = {p.name: p.read_bytes() for p in (repo / "fraud" / "v1").iterdir()}
    # An impossible gate: fp16 and int8 must fail it and stay unpublished, with the reason recorded.
    settings = load_settings(epochs=2, gate_max_probability_diff=1e-12, latency_repeats=5, serve="torch")
    target = train_and_publish(training_set, repo, "fraud", settings)
    assert target == repo / "fraud" / "v2"
    assert model_repo.list_versions(repo, "fraud") == ["v1", "v2"]
    assert {p.name: p.read_bytes() for p in (repo / "fraud" / "v1").iterdir()} == v1
    meta = model_repo.load_version(target).metadata
    assert meta["version"] == "v2"
    for name in ("fp16", "int8"):
        assert meta["variants"][name]["published"] is False
        assert "max abs probability difference" in meta["variants"][name]["gate"]["reason"]
        assert not (target / f"model.{name}.onnx").exists()
    assert not [p for p in (repo / "fraud").iterdir() if p.name.startswith(".staging")]


def _metrics(validation: float, test: float) -> dict:
    return {"validation": {"pr_auc": validation}, "test": {"pr_auc": test}}


@pytest.mark.parametrize(("baseline", "torch", "selected", "held"), [
    (_metrics(0.60, 0.64), _metrics(0.70, 0.66), "torch", True),
    (_metrics(0.60, 0.64), _metrics(0.70, 0.62), "torch", False),  # won on validation, lost on test: said so
    (_metrics(0.70, 0.64), _metrics(0.60, 0.70), "baseline", True),  # the baseline never fails its own gate
    (_metrics(0.65, 0.64), _metrics(0.65, 0.70), "baseline", True),  # a tie goes to the simpler model
    (_metrics(None, None), _metrics(0.10, 0.10), "torch", True),  # no positives for the baseline to rank: 0
])
def test_the_version_serves_the_model_better_on_validation_and_says_whether_it_held_on_test(baseline, torch, selected, held):
    choice = select(baseline, torch)
    assert choice["selected"] == selected
    assert choice["baseline_gate"]["passed"] is held
    assert choice["selection"]["split"] == "validation" and choice["baseline_gate"]["split"] == "test"


def test_a_run_whose_baseline_wins_publishes_the_baseline_as_fp32_onnx(training_set, tmp_path):
    """One epoch of the torch model on the small history loses to logistic regression on validation."""
    settings = load_settings(epochs=1, latency_repeats=5, latency_warmup=1)
    target = train_and_publish(training_set, tmp_path / "repo", "fraud", settings)
    version = model_repo.load_version(target)
    meta = version.metadata
    if meta["metrics"]["selected"] != "baseline":
        pytest.fail(f"the torch model won after one epoch; pick a weaker setting: {meta['metrics']['selection']}")
    assert set(meta["variants"]) == {"fp32"} and meta["variants"]["fp32"]["published"]
    x = schema.vectorize_frame(training_set.frame.iloc[-50:], meta["defaults"])
    served = run_onnx(target / meta["variants"]["fp32"]["file"], x)
    split = time_split(training_set.frame["event_timestamp"], settings.validation_fraction, settings.test_fraction)
    baseline = fit_baseline(schema.vectorize_frame(training_set.frame, meta["defaults"])[split.train],
                            training_set.labels[split.train], settings.seed)
    assert np.max(np.abs(served - predict_baseline(baseline, x))) <= 1e-5


def test_without_a_stable_version_only_the_variants_gate_runs_and_the_version_is_a_candidate(version_dir):
    gates = model_repo.load_version(version_dir).spec.gates
    assert gates is not None and gates.status == "candidate" and gates.stable_version is None
    assert [check.name for check in gates.checks] == ["variants"]
    assert "No stable version was named" in (version_dir / "MODEL_CARD.md").read_text()


def test_the_stable_is_scored_by_its_own_fp32_graph_on_the_same_test_rows(published_repo, training_set, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(published_repo, repo)
    lax = dict(gate_min_pr_auc_gain=-1.0, gate_max_ece_increase=1.0, gate_max_slice_pr_auc_drop=1.0, gate_bootstrap=50)
    settings = load_settings(epochs=1, latency_repeats=5, latency_warmup=1, stable_version="latest", **lax)
    version = model_repo.load_version(train_and_publish(training_set, repo, "fraud", settings))
    gates = version.spec.gates
    assert gates is not None and gates.status == "candidate" and gates.stable_version == "v1", gates.summary()
    assert [check.name for check in gates.checks] == ["pr_auc_gain", "ece_increase", "slice_pr_auc_drop", "variants"]
    v1 = model_repo.load_version(repo / "fraud" / "v1").metadata["metrics"]
    gain = gates.checks[0].values
    # v1 was trained on the same history, so its test split is these rows: its own figure comes back.
    assert gain["stable"] == pytest.approx(v1[v1["selected"]]["test"]["pr_auc"], abs=2e-3)
    assert gain["candidate"] == pytest.approx(version.metadata["variants"]["fp32"]["metrics"]["pr_auc"], abs=1e-9)
    assert "Every gate passed against the stable version v1" in (version.path / "MODEL_CARD.md").read_text()


def test_a_candidate_that_fails_its_gates_is_published_as_rejected_and_exits_6(published_repo, small_data, tmp_path,
                                                                                monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(published_repo, repo)
    for name, value in {"STABLE_VERSION": "v1", "GATE_MIN_PR_AUC_GAIN": "0.99", "GATE_BOOTSTRAP": "50",
                        "LATENCY_REPEATS": "5", "LATENCY_WARMUP": "1"}.items():
        monkeypatch.setenv(f"FLYWHEEL_TRAINER_{name}", value)
    code = main(["train", "--feature-repo", str(FEATURE_REPO), "--data", str(small_data), "--model-repo", str(repo),
                 "--model", "fraud", "--epochs", "1"])
    assert code == 6
    rejected = model_repo.load_version(repo / "fraud" / "v2")  # published, verifiable, marked
    gates = rejected.spec.gates
    assert rejected.spec.rejected and gates.stable_version == "v1"
    assert [check.name for check in gates.failed()] == ["pr_auc_gain"]
    card = (rejected.path / "MODEL_CARD.md").read_text()
    assert "**REJECTED: never to be rolled out.**" in card and gates.checks[0].reason in card
    assert model_repo.resolve(repo, "fraud").name == "v1"  # "latest" passes over it


def test_a_stable_version_that_is_not_published_is_a_config_error(published_repo, small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TRAINER_STABLE_VERSION", "v9")
    repo = tmp_path / "repo"
    shutil.copytree(published_repo, repo)
    code = main(["train", "--feature-repo", str(FEATURE_REPO), "--data", str(small_data), "--model-repo", str(repo),
                 "--model", "fraud", "--epochs", "1"])
    assert code == 2
    assert model_repo.list_versions(repo, "fraud") == ["v1"]


def test_a_controller_run_is_recorded_in_the_lineage_it_is_found_by():
    from flywheel_trainer._pipeline import run_lineage

    settings = load_settings(run_id="fraud-retrain-7", run_trigger="DriftAlert", run_reason="data alert (ks)",
                             run_policy="fraud", window="720h")
    assert run_lineage(settings, "v3") == {"id": "fraud-retrain-7", "trigger": "DriftAlert",
                                           "reason": "data alert (ks)", "policy": "fraud", "parent": "v3",
                                           "window": "720h", "warm_start": None}


@pytest.mark.parametrize("window", ["30d", "-1h", "h"])
def test_a_data_window_that_is_not_a_duration_is_refused(window):
    from flywheel_trainer import ConfigError

    with pytest.raises(ConfigError, match="WINDOW"):
        load_settings(window=window)
