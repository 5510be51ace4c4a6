"""Training-serving skew at run time on the real stack (issue 15): the drift service samples what the transformer
served, `python -m flywheel_trainer skew` rebuilds those rows from the offline store as training would and posts
the counts back, and the drift report shows them per version.

Two stacks of scripts/localstack.py over the same small history and model (test_feature_stream's helpers):

- stream ON (the default wiring): every scored transaction's card row reaches the online store before the card's
  next transaction is scored, and the offline store as a parquet part, so what was served is what training joins:
  no card feature mismatches;
- stream OFF (FLYWHEEL_TRANSFORMER_FEATURE_STREAM_URL=""): the transformer serves the last materialization's
  card rows. The same transactions then reach the offline data through the features service's stream step after
  they were served (as a live path that lags would deliver them), so training's join knows the card activity
  serving did not see: the check counts mismatches on the windowed card counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from flywheel_contracts.skew import SkewResult
from flywheel_core import schema

from localstack import Ports, Stack, bearer, default_services, free_port, token, venv_python  # conftest's path
from test_feature_stream import ROOT, live, prepare, send

SCORED = 300
"""Transactions scored per stack: about two simulated days of the small world, so some cards come back within
24 hours (what the stale counts miss) while both runs stay well within a minute each."""


@contextmanager
def skew_stack(workdir: Path, data: Path, model_repo: Path, stream: bool) -> Iterator[Ports]:
    ports = Ports(features=free_port(), predictor=free_port(), transformer=free_port(), drift=free_port(),
                  router=free_port(), router_admin=free_port())
    # Each post's card rows go to the offline store before the post is answered, so the check need not wait
    # for the stream step's flush interval.
    extra = {"FLYWHEEL_FEATURES_STREAM_FLUSH_ROWS": "1"}
    if not stream:
        extra["FLYWHEEL_TRANSFORMER_FEATURE_STREAM_URL"] = ""
    with Stack(default_services(model_repo, data, ports, extra_env=extra), log_dir=workdir / "logs"):
        yield ports


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s  # a bound for a stuck stack, not an assertion on speed
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.05)


def offline_rows(ports: Ports) -> float:
    """card_activity rows the stream step has written to the offline store (parquet parts)."""
    text = httpx.get(f"http://127.0.0.1:{ports.features}/metrics", timeout=5).text
    match = re.search(r"^flywheel_features_stream_offline_rows_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def sampled(ports: Ports, data: Path) -> int:
    """Served rows the drift service has drawn its samples from, over the versions it reports (0 before any). The
    session's model repository may hold more than v1 by now (other tests publish versions), and the stack serves
    the newest."""
    report = httpx.get(f"http://127.0.0.1:{ports.drift}/v1/report", params={"model": "fraud"}, timeout=30)
    seen = 0
    for version in report.json().get("versions", []) if report.status_code == 200 else []:
        answer = httpx.get(f"http://127.0.0.1:{ports.drift}/v1/skew/sample",
                           params={"model": "fraud", "version": version["version"], "limit": 1},
                           headers=bearer(token(data, "drift-skew")), timeout=10)
        seen += int(answer.json()["seen"]) if answer.status_code == 200 else 0
    return seen


def check(ports: Ports, data: Path, model_repo: Path) -> tuple[SkewResult, str]:
    """`python -m flywheel_trainer skew` as the chart's CronJob runs it, then the report's skew section."""
    result = subprocess.run(
        [venv_python("services/trainer"), "-m", "flywheel_trainer", "skew", "--feature-repo", "feature_repo",
         "--data", str(data), "--model-repo", str(model_repo), "--drift-url", f"http://127.0.0.1:{ports.drift}",
         "--token-file", str(token(data, "drift-skew"))],
        cwd=ROOT, env={**os.environ, "FLYWHEEL_DATA_DIR": str(data)}, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = httpx.get(f"http://127.0.0.1:{ports.drift}/v1/report", params={"model": "fraud"}, timeout=30).json()
    [version] = report["versions"]
    assert version["skew"] is not None, report
    return SkewResult.model_validate(version["skew"]), result.stdout


def scored_and_checked(workdir: Path, model_repo: Path, stream: bool) -> tuple[SkewResult, str]:
    data, repo = prepare(workdir, model_repo)
    transactions = live(data, SCORED)
    with skew_stack(workdir, data, repo, stream) as ports:
        send(ports, transactions, stream=stream)
        if not stream:  # the offline data catches up with what was served, after it was served
            write = bearer(token(data, "features-write"))
            answer = httpx.post(f"http://127.0.0.1:{ports.features}/stream/transactions",
                                json={"transactions": transactions}, headers=write, timeout=60)
            assert answer.status_code == 200, answer.text
        wait_for(lambda: offline_rows(ports) >= SCORED, "the stream step wrote every card row offline")
        wait_for(lambda: sampled(ports, data) >= SCORED, "the drift service sampled every served row")
        return check(ports, data, repo)


@pytest.fixture(scope="module")
def stream_on(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> tuple[SkewResult, str]:
    return scored_and_checked(tmp_path_factory.mktemp("skew-on"), model_repo, stream=True)


@pytest.fixture(scope="module")
def stream_off(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> tuple[SkewResult, str]:
    return scored_and_checked(tmp_path_factory.mktemp("skew-off"), model_repo, stream=False)


def test_with_the_stream_step_on_served_card_features_are_what_training_joins(stream_on):
    result, printed = stream_on
    # The version the stack served: v1, or a newer one other tests published into the session's repository.
    assert (result.model, result.rows, result.unmatched) == ("fraud", SCORED, 0)
    for name in schema.CARD_FEATURES:
        feature = result.features[name]
        assert (feature.compared, feature.mismatched) == (SCORED, 0), (name, feature.examples)
    assert f"fraud {result.version}: compared {SCORED} of {SCORED}" in printed


def test_with_the_stream_step_off_the_stale_card_counts_are_counted_as_skew(stream_off):
    result, printed = stream_off
    assert (result.rows, result.unmatched) == (SCORED, 0)
    for name in ("txn_count_1h", "txn_count_24h"):
        counts = result.features[name]
        assert counts.compared == SCORED and counts.mismatched > 0, name
        assert f"{name} {counts.mismatched}/{SCORED}" in printed
    # Columns that do not depend on the card's state were served as training builds them.
    for name in ("amount_log", "hour_sin", "hour_cos", "is_night", "card_id", "merchant_id", "country"):
        assert result.features[name].mismatched == 0, name
