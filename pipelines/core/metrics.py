"""The metrics every pipeline scores with, and the losses that blend weights minimise.

Each metric takes ``(y, prediction)`` and returns a float: ``rmse`` and ``log_rmse`` (house prices: RMSE of log
price), ``accuracy`` and ``log_loss`` of class probabilities (leaves), ``huber_loss(delta)`` (a robust loss that
stack and blend weights minimise instead of the squared error), and ``fold_scores``: a metric fold by fold,
what a K-fold CV averages. Blending (``blending.py``) and the pipelines import them from here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import huber
from sklearn.metrics import accuracy_score, root_mean_squared_error


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """scikit-learn's RMSE; NaN (not an exception) where a diverged model predicted a non-finite value, so
    the run is refused by name where its scores are checked."""
    p = np.asarray(p, float)
    if not np.isfinite(p).all():
        return float("nan")
    return float(root_mean_squared_error(np.asarray(y, float), p))


def log_rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """House Prices' metric: RMSE between the logs of price and prediction, predictions clamped to >= 1 (d2l)."""
    return rmse(np.log(y), np.log(np.clip(pred, 1, None)))


def huber_loss(delta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """The mean Huber loss with threshold ``delta`` (``scipy.special.huber``): squared for residuals below it,
    linear above, so a few rows that no model predicts (a regression's gross outliers) pull blend weights
    linearly, not quadratically."""

    def loss(y: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(huber(delta, np.asarray(y, float) - np.asarray(p, float))))

    return loss


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-probability of the true class; ``probs`` is (rows, classes), ``y`` class indices.

    Not scikit-learn's ``log_loss``, which agrees with it to the last bit on probabilities in [1e-15, 1 - 2e-16]
    but is no objective for blend weights: it refuses a probability above 1 (a blend of rows that say 1.0,
    weighted by weights that sum to 1 + 1e-8 while SLSQP steps or differentiates, exceeds 1), warns on every
    call whose rows do not sum to one within 1.5e-8 (probabilities read back from a CSV), clips at 2.2e-16
    rather than 1e-15 (a true class given less scores 36.0, not 34.5) and needs the class list of every fold."""
    picked = np.asarray(probs, float)[np.arange(len(y)), np.asarray(y, int)]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, None))))


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """scikit-learn's accuracy of the most probable class; ``probs`` is (rows, classes), ``y`` class indices."""
    return float(accuracy_score(np.asarray(y), np.asarray(probs).argmax(1)))


def fold_scores(
    y: np.ndarray,
    pred: np.ndarray,
    folds: np.ndarray,
    loss: Callable[[np.ndarray, np.ndarray], float] = rmse,
    mask: np.ndarray | None = None,
) -> list[float]:
    """``loss`` on each fold's rows (those inside ``mask``), fold by fold: what a K-fold CV averages."""
    mask = np.ones(len(y), bool) if mask is None else mask
    return [loss(y[(folds == k) & mask], pred[(folds == k) & mask]) for k in np.unique(folds)]
