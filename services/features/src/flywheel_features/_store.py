"""Operations on the Feast store: open, apply, materialize, historical retrieval.

These are what `feast apply` / `feast materialize-incremental` do, called through Feast's Python API so
the Makefile and tests need no `feast` CLI on the PATH and pick the environment from the settings.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore, FileSource
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.project import Project
from feast.repo_config import load_repo_config
from feast.repo_operations import apply_total, parse_repo

from flywheel_core.offline_store import OfflineStoreError, historical_features

from ._config import Settings
from ._errors import StoreError
from ._plan import changes

ENTITY_COLUMNS = ("card_id", "merchant_id", "event_timestamp", "amount", "event_hour")
"""What an entity frame for the fraud_v1 service must hold (event_timestamp: the as-of instant)."""


def open_store(settings: Settings) -> FeatureStore:
    settings.export_data_dir()
    return FeatureStore(repo_path=str(settings.repo_path.resolve()), fs_yaml_file=settings.store_yaml_path.resolve())


def tune_online_store(store: FeatureStore) -> None:
    """Let the local SQLite online store commit without waiting for the disk (WAL, synchronous=NORMAL).

    Why: the stream step commits one online write per post. In SQLite's default rollback journal each commit
    creates, syncs and deletes a journal file: about 0.2 ms of CPU and, on a busy disk, 10-15 ms of wall time
    (issue 12, profiled), during which Feast's one shared connection also holds back every lookup. In WAL mode
    with synchronous=NORMAL a commit is an append to the write-ahead log (readers never wait for it) and the
    disk is synced at checkpoints: an application crash loses nothing committed, a power cut may lose the last
    commits (as it may the stream log's unsynced lines). WAL is a property of the database file, so the CLI's
    materialize then writes it the same way. Other online stores (Redis in a cluster) are left as they are.
    """
    online = store._get_provider().online_store
    if not isinstance(online, SqliteOnlineStore):
        return
    connection = online._get_conn(store.config)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def apply(settings: Settings) -> list[str]:
    """`feast apply`: register the definitions and create the online tables; returns what changed.

    Feast's plan decides first (see _plan); when nothing but its own timestamps would change, nothing is
    written and the result is []. Feast's printed diff is not shown: the result says what changed.
    """
    settings.export_data_dir()
    repo = settings.repo_path.resolve()
    config = load_repo_config(repo, settings.store_yaml_path.resolve())
    sys.path.insert(0, str(repo))  # the definitions import each other by module name
    cwd = os.getcwd()
    feast_said = io.StringIO()
    try:
        os.chdir(repo)  # and Feast imports them relative to the repository
        contents = parse_repo(repo)
        if not contents.projects:  # as `feast apply` does: the project named in feature_store.yaml
            contents.projects.append(Project(name=config.project, description=config.project_description or ""))
        registry_diff, infra_diff, _ = FeatureStore(repo_path=str(repo), config=config).plan(contents)
        changed = changes(registry_diff, infra_diff)
        if changed:
            with contextlib.redirect_stdout(feast_said):
                apply_total(config, repo, skip_source_validation=False)
    except (Exception, SystemExit) as e:  # Feast exits on some invalid repositories after printing why
        said = feast_said.getvalue().strip()
        raise StoreError(f"apply of {repo} failed: {type(e).__name__}: {e}" + (f"\n{said}" if said else "")) from e
    finally:
        os.chdir(cwd)  # apply_total changes into the repository
        sys.path.remove(str(repo))
    return changed


def history_end(store: FeatureStore) -> datetime:
    """Just after the newest row of any batch source: the end of the simulated history."""
    newest = []
    for view in store.list_batch_feature_views():
        source = view.batch_source
        if not isinstance(source, FileSource):
            raise StoreError(f"batch source of '{view.name}' is {type(source).__name__}, not a parquet FileSource")
        path = Path(source.path)
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        # A source may be a glob (card_activity: the batch table and the stream's appended parts).
        paths = sorted(path.parent.glob(path.name)) if glob.has_magic(path.name) else [path]
        if not paths or not all(p.exists() for p in paths):
            raise StoreError(f"{path} (batch source of '{view.name}') is missing: generate the data first (make data)")
        for part in paths:
            column = pq.read_table(part, columns=[source.timestamp_field]).column(0)
            newest.append(pd.Timestamp(column.to_pandas().max()))
    return (max(newest) + pd.Timedelta(seconds=1)).to_pydatetime()


def materialize(store: FeatureStore, end: datetime | None = None) -> dict[str, tuple[datetime, datetime]]:
    """Load the online store up to `end` (default: the end of the history); returns each view's interval.

    Incremental from where the last run stopped. A view never materialized starts at end - ttl, not at
    now - ttl as Feast's materialize-incremental would: the history may end before today, and the
    online store should hold exactly what the point-in-time join sees at `end`.
    """
    end = end or history_end(store)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    intervals = {}
    for view in store.list_batch_feature_views():
        start = view.most_recent_end_time or end - (view.ttl or timedelta(days=365))
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        if start >= end:
            continue
        try:
            # Feast's ANSI-coloured progress; the CLI prints one line per view.
            with contextlib.redirect_stdout(io.StringIO()):
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        except Exception as e:
            raise StoreError(f"materializing '{view.name}' from {start} to {end} failed: {e}") from e
        intervals[view.name] = (start, end)
    return intervals


def historical(store: FeatureStore, entities: pd.DataFrame, feature_service: str) -> pd.DataFrame:
    """Point-in-time features of every entity row for `feature_service` (one output row per input row)."""
    missing = [c for c in ENTITY_COLUMNS if c not in entities.columns]
    if missing:
        raise StoreError(f"entity frame lacks column(s) {', '.join(missing)}; it needs {', '.join(ENTITY_COLUMNS)}")
    try:
        return historical_features(store, entities, feature_service, key="transaction_id")  # when the rows carry one
    except OfflineStoreError as e:
        raise StoreError(str(e)) from e

