"""Rows of a push source into the online store, as `FeatureStore.push(..., PushMode.ONLINE)` writes them, at a
fraction of its CPU.

Why: the stream step pushes one card row per scored transaction, and Feast's push cost about 6.9 ms of CPU for
that one row (issue 12, profiled): every call rebuilds each feature view and feature service from the registry's
protobuf (Feast's constructors type-check every argument), twice, then converts the rows pandas -> Arrow ->
protobuf. The online store's own write was about 0.35 ms of it.

So here the views a push source feeds are found by Feast's own rule (`_fvs_for_push_source_or_raise`) once per
registry version: the protobuf Feast's registry cache holds, which a refresh (the feature server's, every
REGISTRY_TTL_SECONDS) or an `apply` replaces. The views are never staler than Feast's own cache. Each column is
converted by Feast's own `python_values_to_proto_values` (what its Arrow path calls per column), with the view's
declared types, and written with the provider's `online_write_batch`: one call per view per push, in one
online-store transaction. `tests/test_online_push.py` holds the result to Feast's push, value for value.

Whatever the shortcut does not cover goes through `FeatureStore.push` unchanged: a view that is not a plain
FeatureView (stream, on-demand, label), a batch source with a field mapping or a created-timestamp column, a
non-scalar feature, a feature service that precomputes online vectors, or a registry without a cached proto.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

SCALARS = frozenset({ValueType.STRING, ValueType.INT32, ValueType.INT64, ValueType.FLOAT, ValueType.DOUBLE,
                     ValueType.BOOL})
"""Feature types the shortcut writes; any other type in a view sends the push through Feast."""

log = logging.getLogger("flywheel_features.stream")


@dataclass(frozen=True)
class _View:
    """A plain feature view the push source feeds, with what the conversion needs of it."""

    view: FeatureView
    features: tuple[tuple[str, ValueType], ...]
    join_keys: tuple[tuple[str, ValueType], ...]


class OnlinePush:
    """Writes rows pushed to `source` into the online store of `store` (not thread-safe: one writer)."""

    def __init__(self, store: FeatureStore, source: str, timestamp_column: str = "event_timestamp") -> None:
        self.store = store
        self.source = source
        self.timestamp_column = timestamp_column
        """The column the rows' event times go in when Feast writes them (the views' batch timestamp field)."""
        self._proto: Any = None
        """The registry protobuf the views were read from (Feast's cache replaces it on a refresh)."""
        self._version: str | None = None
        self._views: list[_View] | None = None
        """The views to write; None: push through Feast (the shortcut does not cover them)."""

    def push(self, columns: Mapping[str, Sequence[Any]], timestamps: Sequence[datetime]) -> None:
        """Write the rows: `columns` by name (join keys and features), `timestamps` their event times (naive UTC,
        as Feast's Arrow path hands them to the online store)."""
        views = self._resolve()
        if views is None:
            frame = pd.DataFrame(dict(columns))
            frame[self.timestamp_column] = pd.to_datetime(list(timestamps), utc=True)
            self.store.push(self.source, frame, to=PushMode.ONLINE)
            return
        provider = self.store._get_provider()
        for view in views:
            values = {name: python_values_to_proto_values(list(columns[name]), kind)
                      for name, kind in view.features + view.join_keys}
            keys = [name for name, _ in view.join_keys]
            rows: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = [
                (EntityKeyProto(join_keys=keys, entity_values=[values[k][i] for k in keys]),
                 {name: values[name][i] for name, _ in view.features}, timestamp, None)
                for i, timestamp in enumerate(timestamps)
            ]
            provider.online_write_batch(self.store.config, view.view, rows, progress=None)

    def _resolve(self) -> list[_View] | None:
        cached = getattr(self.store.registry, "_get_registry_proto", None)
        if cached is None:
            return None
        proto = cached(self.store.project, allow_cache=True)
        if proto is self._proto and proto.version_id == self._version:
            return self._views
        self._views = self._plain_views()
        self._proto, self._version = proto, proto.version_id
        return self._views

    def _plain_views(self) -> list[_View] | None:
        found = self.store._fvs_for_push_source_or_raise(self.source, True)
        why = self._not_covered(found)
        if why:
            log.info("push source %s: written through FeatureStore.push (%s)", self.source, why)
            return None
        return [_View(view, tuple((f.name, f.dtype.to_value_type()) for f in view.features),
                      tuple((e.name, e.dtype.to_value_type()) for e in view.entity_columns))
                for view in found if isinstance(view, FeatureView)]  # all of them (_not_covered)

    def _not_covered(self, found: set[Any]) -> str | None:
        """Why the shortcut does not cover these views (None: it does)."""
        names = {view.name for view in found}
        for service in self.store.registry.list_feature_services(self.store.project, allow_cache=True):
            if getattr(service, "precompute_online", False) and any(
                    p.name in names for p in service.feature_view_projections):
                return f"feature service '{service.name}' precomputes online vectors"
        for view in found:
            if type(view) is not FeatureView:
                return f"'{view.name}' is a {type(view).__name__}"
            source = view.batch_source
            if source is None or source.field_mapping or source.created_timestamp_column \
                    or source.timestamp_field != self.timestamp_column:
                return f"'{view.name}' has a field mapping, created timestamps or another timestamp field"
            types = [f.dtype.to_value_type() for f in view.features] + [e.dtype.to_value_type()
                                                                       for e in view.entity_columns]
            if any(kind not in SCALARS for kind in types):
                return f"'{view.name}' has a non-scalar feature or key"
        return None
