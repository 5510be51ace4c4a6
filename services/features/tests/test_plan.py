"""A warm `apply` says what changed in one phrase per object, and a difference of Feast's timestamps alone is none."""

from feast.diff.infra_diff import InfraDiff, InfraObjectDiff
from feast.diff.property_diff import PropertyDiff, TransitionType
from feast.diff.registry_diff import FeastObjectDiff, RegistryDiff
from feast.infra.registry.registry import FeastObjectType
from feast.protos.feast.core.DataSource_pb2 import DataSource

from flywheel_features import apply
from flywheel_features._plan import changes, differs


def _source(path: str, stamped_at: int) -> DataSource:
    source = DataSource(name="card_activity_source", timestamp_field="event_timestamp")
    source.file_options.uri = path
    source.meta.created_timestamp.seconds = stamped_at
    source.meta.last_updated_timestamp.seconds = stamped_at + 1
    return source


def _update(*properties: PropertyDiff) -> RegistryDiff:
    diff = RegistryDiff()
    diff.add_feast_object_diff(FeastObjectDiff("card_activity", FeastObjectType.FEATURE_VIEW, None, None,
                                               list(properties), TransitionType.UPDATE))
    return diff


def test_sources_that_differ_only_in_feasts_timestamps_do_not_differ():
    assert not differs(_source("/d/card_activity.parquet", 1), _source("/d/card_activity.parquet", 2))
    assert differs(_source("/d/card_activity.parquet", 1), _source("/e/card_activity.parquet", 1))


def test_an_update_of_timestamps_alone_is_no_change_and_a_real_one_is_named():
    stamps = PropertyDiff("batch_source", _source("/d/a.parquet", 1), _source("/d/a.parquet", 2))
    assert changes(_update(stamps), InfraDiff()) == []
    ttl = PropertyDiff("ttl", 86_400, 172_800)
    assert changes(_update(stamps, ttl), InfraDiff()) == ["updated feature view card_activity (ttl)"]


def test_created_tables_are_named():
    infra = InfraDiff()
    infra.infra_object_diffs.append(
        InfraObjectDiff("flywheel_card_activity", "sqlite table", None, None, [], TransitionType.CREATE))
    assert changes(RegistryDiff(), infra) == ["created sqlite table flywheel_card_activity"]


def test_apply_after_materialize_changes_and_writes_nothing(store, settings):
    # `store` has been applied and materialised: the state of every warm `make features`.
    registry = settings.data_dir / "registry.db"
    before = registry.stat().st_mtime_ns
    assert apply(settings) == []
    assert registry.stat().st_mtime_ns == before
