"""The strong house-prices preset's model families, with defaults and their Optuna search spaces.

Every model sees the same per-fold feature matrix (``features.house.make_preprocessor``) and predicts
``log1p(SalePrice)``. Defaults follow the public stacked-regression kernels, tuned on these folds.
"""

from __future__ import annotations

from collections.abc import Callable

from sklearn.base import RegressorMixin
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import ElasticNet, Lasso, Ridge
from sklearn.svm import SVR

from features.house import make_preprocessor

__all__ = ["STRONG_MODELS", "SEARCH_SPACES", "make_model", "make_preprocessor", "model_names"]


def _lgbm(seed: int, **params) -> RegressorMixin:
    from lightgbm import LGBMRegressor

    # one thread: tiny data, and OpenMP spin-waiting collapses when another process shares the cores
    return LGBMRegressor(random_state=seed, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1, **params)


# name -> (factory(seed, **params), default params)
STRONG_MODELS: dict[str, tuple[Callable[..., RegressorMixin], dict]] = {
    "lasso": (lambda seed, **p: Lasso(random_state=seed, max_iter=50_000, **p), {"alpha": 0.0005}),
    "enet": (lambda seed, **p: ElasticNet(random_state=seed, max_iter=50_000, **p), {"alpha": 0.0006, "l1_ratio": 0.8}),
    "ridge": (lambda seed, **p: Ridge(**p), {"alpha": 10.0}),
    "krr": (lambda seed, **p: KernelRidge(kernel="polynomial", **p), {"alpha": 0.6, "degree": 2, "coef0": 2.5}),
    "svr": (lambda seed, **p: SVR(**p), {"C": 20.0, "epsilon": 0.008, "gamma": 0.0003}),
    "lgbm": (_lgbm, {"n_estimators": 1500, "learning_rate": 0.02, "num_leaves": 6, "min_child_samples": 8,
                     "subsample": 0.8, "subsample_freq": 5, "colsample_bytree": 0.25, "max_bin": 63,
                     "reg_lambda": 1.0}),
}


def model_names(names: list[str] | None) -> list[str]:
    """``names`` checked against the zoo (``None``: every model), or a one-line error listing the choices."""
    from pipelines.errors import PipelineError

    names = list(names) if names else list(STRONG_MODELS)
    unknown = [n for n in names if n not in STRONG_MODELS]
    if unknown:
        raise PipelineError(f"unknown model(s) {unknown}; choose from {', '.join(STRONG_MODELS)}")
    return names


def make_model(name: str, seed: int = 0, **params) -> RegressorMixin:
    factory, defaults = STRONG_MODELS[name]
    return factory(seed, **{**defaults, **params})


# Optuna search spaces, next to the models they tune: name -> fn(trial) -> params
SEARCH_SPACES: dict[str, Callable] = {
    "lasso": lambda t: {"alpha": t.suggest_float("lasso.alpha", 1e-4, 3e-3, log=True)},
    "enet": lambda t: {"alpha": t.suggest_float("enet.alpha", 1e-4, 3e-3, log=True),
                       "l1_ratio": t.suggest_float("enet.l1_ratio", 0.1, 1.0)},
    "ridge": lambda t: {"alpha": t.suggest_float("ridge.alpha", 0.1, 100, log=True)},
    "krr": lambda t: {"alpha": t.suggest_float("krr.alpha", 0.05, 5, log=True),
                      "coef0": t.suggest_float("krr.coef0", 0.5, 10, log=True)},
    "svr": lambda t: {"C": t.suggest_float("svr.C", 1, 100, log=True),
                      "epsilon": t.suggest_float("svr.epsilon", 1e-3, 0.05, log=True),
                      "gamma": t.suggest_float("svr.gamma", 5e-5, 3e-3, log=True)},
    "lgbm": lambda t: {"learning_rate": t.suggest_float("lgbm.learning_rate", 0.005, 0.1, log=True),
                       "num_leaves": t.suggest_int("lgbm.num_leaves", 3, 31, log=True),
                       "min_child_samples": t.suggest_int("lgbm.min_child_samples", 3, 40, log=True),
                       "colsample_bytree": t.suggest_float("lgbm.colsample_bytree", 0.1, 0.8)},
}
