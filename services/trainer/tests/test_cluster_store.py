"""The trainer image runs in the cluster on feature_repo/feature_store.cluster.yaml (the chart's trainer CronJob
sets it), whose online store is Redis. Feast imports the online store's class whenever it loads that config, even
for the offline reads training does, so the trainer must install Feast's redis extra: without it every trainer Job
failed at start with FeastModuleImportError, and kwok, which never runs containers, could not show it."""

from pathlib import Path

from flywheel_trainer._feast import keep_feast_metrics_in_memory

REPO = Path(__file__).resolve().parents[3] / "feature_repo"


def test_the_cluster_feature_store_config_loads_in_the_trainers_environment():
    # As the trainer does: a bare `import feast` would point this process's environment at a metrics directory,
    # which the CLI tests' subprocesses then inherit (and leave files open in).
    keep_feast_metrics_in_memory()
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(REPO), fs_yaml_file=REPO / "feature_store.cluster.yaml")
    assert type(store._get_provider().online_store).__name__ == "RedisOnlineStore"  # the class, no connection
