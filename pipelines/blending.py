"""Blend weights on out-of-fold predictions: non-negative, summing to one.

Used by the strong house-prices preset and by ``python -m pipelines blend``. The honest CV of a blend
is *cross-fitted*: the weights scored on fold k are fitted on the other folds' OOF predictions only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2)))


def fit_simplex_weights(
    preds: np.ndarray, y: np.ndarray, loss: Callable[[np.ndarray, np.ndarray], float] = rmse
) -> np.ndarray:
    """Weights ``w >= 0, sum(w) = 1`` minimising ``loss(y, preds @ w)``; ``preds`` is (rows, models[, ...])."""
    m = preds.shape[1]
    if m == 1:
        return np.ones(1)

    def objective(w: np.ndarray) -> float:
        return loss(y, np.tensordot(preds, w, axes=([1], [0])))

    result = minimize(
        objective, np.full(m, 1.0 / m), method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def blend(preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.tensordot(preds, weights, axes=([1], [0]))


def cross_fitted_scores(
    preds: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    loss: Callable[[np.ndarray, np.ndarray], float] = rmse,
    mask: np.ndarray | None = None,
) -> list[float]:
    """Per-fold score of a blend whose weights never saw that fold (rows outside ``mask`` not used)."""
    mask = np.ones(len(y), bool) if mask is None else mask
    scores = []
    for k in np.unique(folds):
        fit_rows, score_rows = (folds != k) & mask, (folds == k) & mask
        w = fit_simplex_weights(preds[fit_rows], y[fit_rows], loss)
        scores.append(loss(y[score_rows], blend(preds[score_rows], w)))
    return scores
