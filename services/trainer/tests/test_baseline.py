"""The logistic-regression baseline as an exportable graph: the same probabilities as scikit-learn's, in ONNX."""

import numpy as np
import pytest

from flywheel_trainer._baseline import baseline_module, fit_baseline, predict_baseline
from flywheel_trainer._export import export_fp32
from flywheel_trainer._model import BUCKETS, N_NUMERIC
from flywheel_trainer._train import predict_probability
from flywheel_trainer._variants import run_onnx

from test_model import synthetic


@pytest.fixture(scope="module")
def fitted():
    x, y = synthetic(2000, seed=3)
    # Few distinct buckets per hashed column, so later rows hold buckets training never saw.
    x[:, N_NUMERIC:] = np.mod(x[:, N_NUMERIC:], 5)
    return x, y, fit_baseline(x[:1500], y[:1500], seed=0)


def test_the_baseline_graph_gives_scikit_learns_probabilities(fitted):
    x, _, pipeline = fitted
    unseen = x.copy()
    unseen[:, N_NUMERIC:] = np.array([b - 1 for b in BUCKETS], dtype=np.float32)  # buckets never seen: no weight
    for rows in (x, unseen):
        expected = predict_baseline(pipeline, rows)
        assert np.max(np.abs(predict_probability(baseline_module(pipeline), rows) - expected)) <= 1e-5


def test_the_baseline_exports_to_onnx_and_tolerates_out_of_range_ids(fitted, tmp_path):
    x, _, pipeline = fitted
    module = baseline_module(pipeline).eval()
    path = export_fp32(module, tmp_path / "baseline.onnx", x)
    assert np.max(np.abs(run_onnx(path, x[:300]) - predict_baseline(pipeline, x[:300]))) <= 1e-5
    wild = x[:5].copy()
    wild[:, N_NUMERIC] = 1e6
    wild[:, N_NUMERIC + 1] = -3
    out_of_range = wild.copy()
    out_of_range[:, N_NUMERIC : N_NUMERIC + 2] = BUCKETS[0] - 1  # a bucket this data never used: weight 0
    assert np.allclose(run_onnx(path, wild), predict_probability(module, out_of_range), atol=1e-6)
