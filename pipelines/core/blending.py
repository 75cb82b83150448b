"""Blend weights on out-of-fold predictions: non-negative, summing to one.

Used by the strong house-prices preset and by ``python -m pipelines blend`` (house prices on RMSE of log
price, leaves on the log-loss of class probabilities: the losses and metrics are ``metrics.py``'s). The honest
CV of a blend is *cross-fitted*: the weights scored on fold k are fitted on the other folds' OOF predictions only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from pipelines.core.metrics import fold_scores, rmse


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


def cross_fitted_blend(
    preds: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    loss: Callable[[np.ndarray, np.ndarray], float] = rmse,
    mask: np.ndarray | None = None,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = blend,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The blend's out-of-fold predictions, each fold's rows blended with weights fitted on the other folds'
    rows only (rows outside ``mask`` neither fit nor are scored), and those weights per fold.

    ``combine(preds, weights)`` makes the blended prediction (default: the weighted mean; a stack may add a
    rule of its own on top, e.g. house prices' extrapolation guard). Any metric of these predictions, fold by
    fold, is an honest CV of the blend (log-loss and accuracy for class probabilities, RMSE for regression)."""
    mask = np.ones(len(y), bool) if mask is None else mask
    oof = np.full((len(y), *preds.shape[2:]), np.nan)
    weights = {}
    for k in np.unique(folds):
        fit_rows, score_rows = (folds != k) & mask, (folds == k) & mask
        weights[int(k)] = fit_simplex_weights(preds[fit_rows], y[fit_rows], loss)
        oof[score_rows] = combine(preds[score_rows], weights[int(k)])
    return oof, weights


def cross_fitted_scores(
    preds: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    loss: Callable[[np.ndarray, np.ndarray], float] = rmse,
    mask: np.ndarray | None = None,
    fit_loss: Callable[[np.ndarray, np.ndarray], float] | None = None,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = blend,
) -> list[float]:
    """Per-fold ``loss`` of a blend whose weights never saw that fold (rows outside ``mask`` not used); the
    weights minimise ``fit_loss`` (default: ``loss`` itself), ``combine`` blends (``cross_fitted_blend``)."""
    oof, _ = cross_fitted_blend(preds, y, folds, fit_loss or loss, mask, combine)
    return fold_scores(y, oof, folds, loss, mask)

