"""A real Feast store for the tests: the `small` simulated history applied and materialised into a
temporary SQLite online store, once per session, through the same functions the CLI runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from feast import FeatureStore

from flywheel_contracts.auth import TokenFile, write_token
from flywheel_contracts.ports import free_port
from flywheel_core import feature_pipeline, sim
from flywheel_core.feature_pipeline import read_parquet
from flywheel_features import Settings, apply, create_app, materialize, open_store

REPO_ROOT = Path(__file__).resolve().parents[3]
HISTORY_START = "2026-01-01"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    transactions = sim.generate_history(sim.preset("small", seed=11, start=HISTORY_START))
    feature_pipeline.write_feature_tables(transactions, data)
    transactions.to_parquet(data / feature_pipeline.TRANSACTIONS_FILE, index=False)
    return data


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the two credentials, as `make up` writes them under data/tokens/."""
    folder = tmp_path_factory.mktemp("tokens")
    write_token(folder / "features-read")
    write_token(folder / "features-write")
    return folder


@pytest.fixture(scope="session")
def settings(data_dir: Path, tokens: Path) -> Settings:
    return Settings(repo_path=REPO_ROOT / "feature_repo", data_dir=data_dir,
                    read_token_file=tokens / "features-read", write_token_file=tokens / "features-write")


@pytest.fixture(scope="session")
def read_header(settings: Settings) -> dict[str, str]:
    """The header the transformer sends."""
    return TokenFile(settings.read_token_file).header()


@pytest.fixture(scope="session")
def write_header(settings: Settings) -> dict[str, str]:
    """The header a writer (push path, materialization) sends."""
    return TokenFile(settings.write_token_file).header()


@pytest.fixture(scope="session")
def store(settings: Settings) -> FeatureStore:
    apply(settings)
    store = open_store(settings)
    materialize(store)
    return store


@pytest.fixture(scope="session")
def card_activity(data_dir: Path) -> pd.DataFrame:
    return read_parquet(data_dir / feature_pipeline.CARD_ACTIVITY_FILE)


@pytest.fixture(scope="session")
def merchant_risk(data_dir: Path) -> pd.DataFrame:
    return read_parquet(data_dir / feature_pipeline.MERCHANT_RISK_FILE)


@pytest.fixture(scope="session")
def transactions(data_dir: Path) -> pd.DataFrame:
    return read_parquet(data_dir / feature_pipeline.TRANSACTIONS_FILE)



@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a loopback port, in a thread of the test process; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the feature server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def server_url(settings: Settings, store: FeatureStore) -> Iterator[str]:
    """The real app, with both tokens configured and the default body limit."""
    with running(create_app(settings, store)) as url:
        yield url
