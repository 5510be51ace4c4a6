"""The drift service's half of the run-time skew check (flywheel_contracts.skew): a bounded uniform sample of
the served rows per version, behind its own token, and the latest posted result in the report and metrics.
The other half (rebuilding rows from the offline store) is the trainer's `skew` command; the two meet in
tests/integration/test_skew.py."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from flywheel_contracts.skew import FeatureSkew, SkewResult, SkewSample
from flywheel_drift import load_settings
from flywheel_drift._errors import ConfigError
from flywheel_drift._skew import SkewStore

from conftest import NAMES, Harness, make_settings, synthetic_probabilities, synthetic_rows


def sample(h: Harness, **params) -> object:
    return h.client.get("/v1/skew/sample", params={"model": "fraud", "version": "v1", **params}, headers=h.skewer)


def result(**fields) -> dict:
    body = SkewResult(model="fraud", version="v1", checked_at=1.0, rows=3, unmatched=1,
                      features={"amount_log": FeatureSkew(compared=3, mismatched=0),
                                "txn_count_1h": FeatureSkew(compared=3, mismatched=2)}).model_dump(mode="json")
    return {**body, **fields}


def test_the_sample_holds_the_served_rows_by_id_with_their_time_and_inputs_by_column(harness):
    x = synthetic_rows(40, seed=3)
    ids = [f"t{i}" for i in range(40)]
    assert harness.batch(x, synthetic_probabilities(40, 3), ids, time="2026-11-30T12:00:00Z").status_code == 202
    harness.sync()
    answer = sample(harness)
    assert answer.status_code == 200, answer.text
    got = SkewSample.model_validate(answer.json())
    assert got.seen == 40 and len(got.rows) == 40
    by_id = {row.id: row for row in got.rows}
    assert set(by_id) == set(ids)
    row = by_id["t7"]
    assert row.time == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
    assert row.inputs == pytest.approx({name: float(v) for name, v in zip(NAMES, x[7], strict=True)})


def test_the_sample_is_bounded_and_a_limit_takes_a_subset(tmp_path, repo):
    h = Harness(make_settings(tmp_path, skew_sample_rows=50))
    try:
        for start in range(0, 500, 100):
            h.batch(synthetic_rows(100, seed=start), None, [f"t{i}" for i in range(start, start + 100)])
        h.sync()
        full = SkewSample.model_validate(sample(h).json())
        assert full.seen == 500 and len(full.rows) == 50
        part = SkewSample.model_validate(sample(h, limit=10).json())
        assert len(part.rows) == 10 and {r.id for r in part.rows} <= {r.id for r in full.rows}
        too_many = sample(h, limit=51)
        assert too_many.status_code == 400 and too_many.json()["field"] == "limit"
    finally:
        h.close()


def test_a_reservoir_keeps_later_rows_as_often_as_early_ones():
    """Algorithm R: every row seen has the same chance to be in the sample (pooled over 200 seeds)."""
    late = 0
    for seed in range(200):
        store = SkewStore(capacity=10, max_versions=2, seed=seed)
        for i in range(100):
            store.add("fraud", "v1", [f"t{i}"], float(i), np.zeros((1, 2)))
        late += sum(int(row.id[1:]) >= 50 for row in store.sample("fraud", "v1", ["a", "b"], 10).rows)
    assert 0.43 < late / 2000 < 0.57  # 0.5 expected; a sample of the first rows would give 0


def test_the_sample_reveals_model_inputs_so_it_needs_the_skew_token(harness):
    url = "/v1/skew/sample?model=fraud&version=v1"
    assert harness.client.get(url).status_code == 401
    assert harness.client.get(url, headers=harness.writer).status_code == 401
    assert harness.client.get(url, headers=harness.labeller).status_code == 401
    assert harness.client.post("/v1/skew", json=result(), headers=harness.writer).status_code == 401
    assert harness.client.get(url, headers=harness.skewer).status_code == 200


def test_the_skew_token_must_be_its_own_file(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(ConfigError, match="SKEW_TOKEN_FILE"):
        load_settings(**{**settings.model_dump(), "skew_token_file": settings.ingest_token_file})


def test_a_posted_result_is_the_versions_latest_in_the_report_and_the_metrics(harness):
    answer = harness.client.post("/v1/skew", json=result(), headers=harness.skewer)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "rows": 3, "mismatched_features": ["txn_count_1h"]}
    skew = harness.version()["skew"]
    assert skew["rows"] == 3 and skew["features"]["txn_count_1h"]["mismatched"] == 2
    metrics = harness.client.get("/metrics").text
    assert 'flywheel_drift_skew_mismatched_rows{feature="txn_count_1h",model="fraud",version="v1"} 2.0' in metrics
    assert 'flywheel_drift_skew_compared_rows{model="fraud",version="v1"} 3.0' in metrics
    later = result(checked_at=2.0, features={"txn_count_1h": {"compared": 3, "mismatched": 0}})
    assert harness.client.post("/v1/skew", json=later, headers=harness.skewer).status_code == 202
    assert harness.version()["skew"]["checked_at"] == 2.0


@pytest.mark.parametrize(("body", "status", "field"), [
    (result(features={"not_a_column": {"compared": 1, "mismatched": 1}}), 400, "features"),
    (result(version="v9"), 404, "version"),
    (result(model="other"), 404, "model"),
    (result(rows=-1), 400, "rows"),
    (result(extra=1), 400, "extra"),
    ({**result(), "features": {"amount_log": {"compared": 1}}}, 400, "features.amount_log.mismatched"),
])
def test_a_bad_result_is_a_4xx_naming_the_field_and_changes_nothing(harness, body, status, field):
    answer = harness.client.post("/v1/skew", json=body, headers=harness.skewer)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert harness.version()["skew"] is None


def test_a_sample_of_an_unknown_version_or_without_one_is_a_4xx(harness):
    assert sample(harness, version="v9").status_code == 404
    missing = harness.client.get("/v1/skew/sample?model=fraud", headers=harness.skewer)
    assert missing.status_code == 400 and missing.json()["field"] == "version"
