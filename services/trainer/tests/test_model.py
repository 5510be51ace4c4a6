"""The torch module and its fp32 export: preprocessing inside the graph, parity, determinism."""

import numpy as np
import torch

from flywheel_core import schema
from flywheel_trainer import load_settings
from flywheel_trainer._export import export_fp32
from flywheel_trainer._model import BUCKETS, N_NUMERIC, FraudNet, numeric_statistics
from flywheel_trainer._train import predict_probability, train_model
from flywheel_trainer._variants import run_onnx


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.lognormal(size=(n, N_NUMERIC)) * 50
    ids = np.stack([rng.integers(0, b, n) for b in BUCKETS], axis=1)
    x = np.concatenate([numeric, ids], axis=1).astype(np.float32)
    y = (numeric[:, 0] + rng.normal(0, 30, n) > 150).astype(np.int64)
    return x, y


def test_onnx_export_matches_torch_for_any_batch_size(tmp_path):
    x, _ = synthetic(600)
    model = FraudNet(*numeric_statistics(x)).eval()
    model.calibrate(0.7, -1.2)
    path = export_fp32(model, tmp_path / "m.onnx", x)
    expected = predict_probability(model, x)
    for batch in (1, 7, 600):
        got = run_onnx(path, x[:batch])
        assert got.shape == (batch,)
        assert np.max(np.abs(got - expected[:batch])) <= 1e-5


def test_out_of_range_bucket_ids_are_clamped_not_an_error(tmp_path):
    x, _ = synthetic(10)
    model = FraudNet(*numeric_statistics(x)).eval()
    wild = x.copy()
    wild[:, N_NUMERIC] = 1e6  # card_id bucket far beyond 4096
    wild[:, N_NUMERIC + 1] = -3
    path = export_fp32(model, tmp_path / "m.onnx", x)
    assert np.all(np.isfinite(run_onnx(path, wild)))


def test_training_is_deterministic_for_a_seed():
    x, y = synthetic(1500, seed=1)
    settings = load_settings(epochs=2, patience=1)
    first = train_model(x[:1000], y[:1000], x[1000:], y[1000:], settings)
    second = train_model(x[:1000], y[:1000], x[1000:], y[1000:], settings)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert first.calibration == second.calibration


def test_model_input_width_is_the_schema():
    assert N_NUMERIC + len(BUCKETS) == schema.INPUT_DIM
