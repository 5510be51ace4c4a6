"""The baseline the torch model has to beat: logistic regression on the same model input.

Numerics get the same log1p-then-standardise treatment as inside the torch model, and each hashed
column is one-hot encoded by bucket id, so the comparison is about the model, not the features. No
class weighting: an unweighted logistic regression is close to calibrated, which keeps its ECE a fair
reference.

The baseline can win (the pipeline publishes whichever model is better on validation), so it is also an
exportable torch module, `LinearBaseline`: the fitted scaler, one weight per seen bucket of each hashed
column (a lookup table; an unseen or out-of-range bucket adds nothing, as scikit-learn's
`handle_unknown="ignore"` does) and the intercept, taking the same `[batch, INPUT_DIM]` FP32 input as
`FraudNet` and giving the same `[batch, 1]` probability, so the ONNX variants and the gates are the same code.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from torch import nn

from ._model import BUCKETS, N_NUMERIC, numeric_statistics


def _log1p_where(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(mask, np.log1p(np.clip(x, 0.0, None)), x)


def fit_baseline(x_train: np.ndarray, y_train: np.ndarray, seed: int, max_iter: int = 500) -> Pipeline:
    """Fit the baseline pipeline on the training split."""
    log_mask, _, _ = numeric_statistics(x_train)
    numeric = list(range(N_NUMERIC))
    hashed = list(range(N_NUMERIC, x_train.shape[1]))
    features = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [
                        ("log", FunctionTransformer(_log1p_where, kw_args={"mask": log_mask})),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            ("hashed", OneHotEncoder(handle_unknown="ignore"), hashed),
        ]
    )
    model = Pipeline([("features", features), ("classifier", LogisticRegression(max_iter=max_iter, random_state=seed))])
    model.fit(x_train, y_train)
    return model


def predict_baseline(model: Pipeline, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x)[:, 1]


class LinearBaseline(nn.Module):
    """The fitted baseline as a graph: input `[batch, INPUT_DIM]` FP32 (schema order) -> probability `[batch, 1]`."""

    # The buffers registered in __init__ (nn.Module's attribute lookup types them Tensor | Module).
    log_mask: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    numeric_coef: torch.Tensor
    bucket_count: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, log_mask: np.ndarray, mean: np.ndarray, scale: np.ndarray, numeric_coef: np.ndarray,
                 tables: list[np.ndarray], intercept: float) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.as_tensor(np.asarray(log_mask, dtype=bool)))
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))
        self.register_buffer("numeric_coef", torch.as_tensor(np.asarray(numeric_coef, dtype=np.float32)).reshape(-1, 1))
        # Table j has one slot per bucket plus a last one holding 0, where an out-of-range id is sent.
        self.register_buffer("bucket_count", torch.tensor([len(t) - 1 for t in tables], dtype=torch.long))
        for j, table in enumerate(tables):
            self.register_buffer(f"table_{j}", torch.as_tensor(np.asarray(table, dtype=np.float32)))
        self.n_tables = len(tables)
        self.register_buffer("intercept", torch.tensor(float(intercept)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        numeric = x[:, :N_NUMERIC]
        numeric = torch.where(self.log_mask, torch.log1p(torch.relu(numeric)), numeric)
        z = ((numeric - self.mean) / self.scale).matmul(self.numeric_coef).squeeze(1) + self.intercept
        ids = x[:, N_NUMERIC:].to(torch.long)
        ids = torch.where((ids >= 0) & (ids < self.bucket_count), ids, self.bucket_count)
        for j in range(self.n_tables):
            z = z + getattr(self, f"table_{j}")[ids[:, j]]
        return torch.sigmoid(z).unsqueeze(1)


def baseline_module(model: Pipeline) -> LinearBaseline:
    """The fitted pipeline of `fit_baseline` as a `LinearBaseline` (same probabilities, to float32 rounding)."""
    features = model.named_steps["features"]
    numeric = features.named_transformers_["numeric"]
    scaler = numeric.named_steps["scale"]
    encoder = features.named_transformers_["hashed"]
    classifier = model.named_steps["classifier"]
    coef = classifier.coef_.reshape(-1)
    numeric_coef, rest = coef[:N_NUMERIC], coef[N_NUMERIC:]
    tables = []
    for categories, buckets in zip(encoder.categories_, BUCKETS, strict=True):
        table = np.zeros(buckets + 1, dtype=np.float64)
        weights, rest = rest[: len(categories)], rest[len(categories):]
        for value, weight in zip(categories, weights, strict=True):
            # A bucket id is a whole number below the column's bucket count; anything else seen in training
            # cannot be looked up by id and is left out (scikit-learn would match it only exactly).
            if float(value).is_integer() and 0 <= int(value) < buckets:
                table[int(value)] = weight
        tables.append(table)
    if len(rest):
        raise ValueError(f"baseline has {len(rest)} coefficients left after the numeric and hashed columns")
    return LinearBaseline(numeric.named_steps["log"].kw_args["mask"], scaler.mean_, scaler.scale_, numeric_coef,
                          tables, float(classifier.intercept_[0]))
