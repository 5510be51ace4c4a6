"""The multivariate test (alibi-detect MMDDrift, torch backend) catches a change of the joint
distribution that leaves every feature's own distribution as it was."""

import time

import numpy as np

from conftest import NAMES, Harness, make_settings, synthetic_probabilities, synthetic_rows


def test_mmd_sees_a_joint_change_that_per_feature_tests_cannot(tmp_path, repo):
    h = Harness(make_settings(tmp_path, mmd_enabled=True, mmd_interval_s=1, mmd_rows=500, mmd_permutations=50))
    try:
        x = synthetic_rows(500, 8)
        columns = [NAMES.index(n) for n in ("txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d")]
        x[:, columns] = x[:, columns[:1]]  # four features become one: same marginals, new joint
        assert h.batch(x, synthetic_probabilities(500, 8)).status_code == 202
        deadline = time.monotonic() + 240  # the first run imports alibi-detect and torch
        while time.monotonic() < deadline and not h.version()["mmd"]:
            time.sleep(0.5)
        version = h.version()
        (result,) = version["mmd"]
        assert result["drift"] and result["p_value"] < 0.05
        copied = {"txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d"}
        assert not any(f["last"]["drift"] for f in version["features"] if f["name"] in copied), version["features"]
        assert np.isfinite(result["distance"])
        assert "flywheel_drift_mmd_p_value" in h.client.get("/metrics").text
    finally:
        h.close()
