"""Train the torch model: weighted loss for the class imbalance, early stopping, Platt calibration.

From scratch (a cold start), or from a parent version's model (a warm start, `_weights.load_warm_start`): then
the parent's weights are scored on validation first, as epoch 0, and stay the result if no epoch beats them.

Determinism: one seeded generator drives initialisation, dropout and batch order, torch runs in
deterministic mode on a fixed number of threads, so the same data and settings give the same weights.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from ._config import TrainerSettings
from ._model import FraudNet, numeric_statistics

log = logging.getLogger("flywheel_trainer")


@dataclass
class TrainingResult:
    model: FraudNet
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    pos_weight: float = 1.0
    calibration: dict[str, str | float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    """Wall and CPU seconds of this process spent fitting (every thread's CPU counts; torch's one-off start-up in
    `seed_everything` is not: it is the same for any data)."""


def seed_everything(seed: int, threads: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def predict_logits(model: FraudNet, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(model.logits(torch.from_numpy(x[start : start + batch])).numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def predict_probability(model: torch.nn.Module, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Calibrated probabilities `[rows]` from a torch module (FraudNet or LinearBaseline: what the ONNX graph must
    reproduce)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[start : start + batch])).numpy().reshape(-1))
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and shift so that sigmoid(scale * logit + shift) is calibrated on (logits, y)."""
    if len(np.unique(y)) < 2:
        return 1.0, 0.0  # nothing to fit on a one-class validation set; keep the raw model
    platt = LogisticRegression(C=1e6, max_iter=1000)  # effectively unregularised
    platt.fit(logits.reshape(-1, 1).astype(np.float64), y)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: TrainerSettings,
    initial: FraudNet | None = None,
) -> TrainingResult:
    """Train with early stopping on validation PR-AUC, then fit Platt scaling on validation.

    `initial` (a warm start) is fine-tuned instead of a new module: its numeric statistics are kept, and its own
    validation PR-AUC is epoch 0's, so fine-tuning that only makes it worse returns it unchanged (re-calibrated)."""
    generator = seed_everything(settings.seed, settings.threads)
    wall, cpu = time.perf_counter(), time.process_time()  # after torch's one-off start-up (~3 s on first seeding)
    if initial is None:
        log_mask, mean, std = numeric_statistics(x_train)
        model = FraudNet(log_mask, mean, std, settings.embedding_dim, settings.hidden, settings.dropout)
    else:
        model = initial
    positives = float(y_train.sum())
    # The loss weighs each fraud as much as all the legitimate rows it is outnumbered by; the ranking
    # then carries the signal and calibration below restores honest probabilities.
    pos_weight = (len(y_train) - positives) / max(positives, 1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.float32))

    best_score, best_epoch, best_state, stale = -1.0, 0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    if initial is not None:
        best_score = _validation_pr_auc(model, x_val, y_val)
        history.append({"epoch": 0, "validation_pr_auc": best_score})
        log.info("epoch 0 (the warm start's weights): validation PR-AUC %.4f", best_score)
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            index = order[start : start + settings.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model.logits(xt[index]), yt[index])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
        score = _validation_pr_auc(model, x_val, y_val)
        history.append({"epoch": epoch, "train_loss": total / len(xt), "validation_pr_auc": score})
        improved = score > best_score
        if improved:
            best_score, best_epoch, best_state, stale = score, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        log.info(
            "epoch %d/%d: train loss %.4f, validation PR-AUC %.4f%s (%.1fs)",
            epoch, settings.epochs, total / len(xt), score, " *" if improved else "", time.perf_counter() - started,
        )
        if stale >= settings.patience:
            log.info("early stop: no better validation PR-AUC for %d epochs; keeping epoch %d", stale, best_epoch)
            break
    if initial is not None and best_epoch == 0:
        log.info("no epoch beat the warm start's weights on validation: keeping them (epoch 0)")

    model.load_state_dict(best_state)
    model.eval()
    scale, shift = fit_platt(predict_logits(model, x_val), y_val)
    model.calibrate(scale, shift)
    log.info("calibration: Platt scaling on validation, p = sigmoid(%.4f * logit %+.4f)", scale, shift)
    return TrainingResult(
        model=model,
        best_epoch=best_epoch,
        epochs_run=epoch,
        history=history,
        pos_weight=pos_weight,
        calibration={"method": "platt", "fitted_on": "validation", "scale": scale, "shift": shift},
        compute={"wall_seconds": round(time.perf_counter() - wall, 2),
                 "cpu_seconds": round(time.process_time() - cpu, 2)},
    )


def _validation_pr_auc(model: FraudNet, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Average precision of the logits on validation; 0.0 when it holds one class only."""
    return float(average_precision_score(y_val, predict_logits(model, x_val))) if 0 < y_val.sum() < len(y_val) else 0.0
