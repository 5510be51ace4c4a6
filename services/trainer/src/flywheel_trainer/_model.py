"""The fraud network: preprocessing, embeddings, MLP and calibration in one exportable module.

Everything a caller would otherwise have to reproduce lives inside the graph: the log transform and
standardisation of numerics (training statistics as buffers), the cast of float-encoded bucket ids to
integer indices, and the calibration of the output. So the exported ONNX takes exactly what
`flywheel_core.schema.vectorize` produces and returns a calibrated probability.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flywheel_core import schema

N_NUMERIC = len(schema.NUMERIC_FEATURES)
BUCKETS = tuple(schema.HASHED_COLUMNS.values())

# Numerics that are non-negative and reach past this value in training are log1p-compressed before
# standardisation: counts and amounts are heavy-tailed, and a few huge values would otherwise dominate
# the learned scale.
_LOG_THRESHOLD = 10.0


def numeric_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log mask, mean and std of the (log-transformed) numeric columns of the training rows."""
    numeric = x_train[:, :N_NUMERIC].astype(np.float64)
    log_mask = (numeric.min(axis=0) >= 0.0) & (numeric.max(axis=0) > _LOG_THRESHOLD)
    transformed = np.where(log_mask, np.log1p(np.clip(numeric, 0.0, None)), numeric)
    mean = transformed.mean(axis=0)
    std = transformed.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)  # a constant column stays constant instead of dividing by ~0
    return log_mask, mean.astype(np.float32), std.astype(np.float32)


class FraudNet(nn.Module):
    """Input `[batch, INPUT_DIM]` FP32 (schema order) -> calibrated probability `[batch, 1]`."""

    # The buffers registered in __init__ (nn.Module's attribute lookup types them Tensor | Module).
    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    max_bucket: torch.Tensor
    calibration_scale: torch.Tensor
    calibration_shift: torch.Tensor

    def __init__(
        self,
        log_mask: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        embedding_dim: int = 8,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.as_tensor(np.asarray(log_mask, dtype=bool)))
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))
        # Upper bound per hashed column: an out-of-range id from a caller maps to the last bucket
        # instead of failing the embedding lookup at serving time.
        self.register_buffer("max_bucket", torch.tensor([b - 1 for b in BUCKETS], dtype=torch.long))
        embeddings = [nn.Embedding(b, min(embedding_dim, b // 2)) for b in BUCKETS]
        self.embeddings = nn.ModuleList(embeddings)
        width = N_NUMERIC + sum(e.embedding_dim for e in embeddings)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )
        # Platt scaling, p = sigmoid(scale * logit + shift); identity until `calibrate` is called.
        self.register_buffer("calibration_scale", torch.tensor(1.0))
        self.register_buffer("calibration_shift", torch.tensor(0.0))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits `[batch]`, used for training and for fitting the calibration."""
        numeric = x[:, :N_NUMERIC]
        numeric = torch.where(self.log_mask, torch.log1p(torch.relu(numeric)), numeric)
        numeric = (numeric - self.mean) / self.std
        ids = x[:, N_NUMERIC:].to(torch.long)
        ids = torch.minimum(torch.maximum(ids, torch.zeros_like(ids)), self.max_bucket)
        parts = [numeric] + [emb(ids[:, j]) for j, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.logits(x) * self.calibration_scale + self.calibration_shift
        return torch.sigmoid(z).unsqueeze(1)

    def calibrate(self, scale: float, shift: float) -> None:
        self.calibration_scale.fill_(float(scale))
        self.calibration_shift.fill_(float(shift))
