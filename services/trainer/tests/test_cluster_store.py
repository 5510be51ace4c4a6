"""The trainer image runs in the cluster on feature_repo/feature_store.cluster.yaml (the chart's trainer CronJob
sets it), whose online store is Redis. Feast imports the online store's class whenever it loads that config, even
for the offline reads training does, so the trainer must install Feast's redis extra: without it every trainer Job
failed at start with FeastModuleImportError, and kwok, which never runs containers, could not show it."""

from pathlib import Path

from feast import FeatureStore

REPO = Path(__file__).resolve().parents[3] / "feature_repo"


def test_the_cluster_feature_store_config_loads_in_the_trainers_environment():
    store = FeatureStore(repo_path=str(REPO), fs_yaml_file=REPO / "feature_store.cluster.yaml")
    assert type(store._get_provider().online_store).__name__ == "RedisOnlineStore"  # the class, no connection
