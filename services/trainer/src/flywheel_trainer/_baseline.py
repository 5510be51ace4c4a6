"""The baseline the torch model has to beat: logistic regression on the same model input.

Numerics get the same log1p-then-standardise treatment as inside the torch model, and each hashed
column is one-hot encoded by bucket id, so the comparison is about the model, not the features. No
class weighting: an unweighted logistic regression is close to calibrated, which keeps its ECE a fair
reference.
"""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ._model import N_NUMERIC, numeric_statistics


def _log_transform(mask: np.ndarray):
    def transform(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where(mask, np.log1p(np.clip(x, 0.0, None)), x)

    return transform


def fit_baseline(x_train: np.ndarray, y_train: np.ndarray, seed: int, max_iter: int = 500) -> Pipeline:
    """Fit the baseline pipeline on the training split."""
    log_mask, _, _ = numeric_statistics(x_train)
    numeric = list(range(N_NUMERIC))
    hashed = list(range(N_NUMERIC, x_train.shape[1]))
    features = ColumnTransformer(
        [
            ("numeric", Pipeline([("log", FunctionTransformer(_log_transform(log_mask))), ("scale", StandardScaler())]), numeric),
            ("hashed", OneHotEncoder(handle_unknown="ignore"), hashed),
        ]
    )
    model = Pipeline([("features", features), ("classifier", LogisticRegression(max_iter=max_iter, random_state=seed))])
    model.fit(x_train, y_train)
    return model


def predict_baseline(model: Pipeline, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x)[:, 1]
