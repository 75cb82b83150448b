"""House Prices: raw CSVs → honest K-fold CV → validated submission.

Presets:
- ``d2l``: the classic d2l recipe, exactly (standardize over train+test, NaN → 0, one-hot with NaN
  indicator, one ``nn.Linear``, Adam lr 5, batch 64, 100 epochs, MSE on the raw price).
- ``strong`` (default): domain imputation, ordinal maps, engineered features, skew correction and
  one-hot inside every fold; regularized linear, kernel ridge, SVR and LightGBM on ``log1p(price)``;
  blended with non-negative weights fitted on out-of-fold predictions. The two well-known outliers
  are left out of *fitting* only: they still get OOF predictions, and the all-rows CV is reported.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.house import NUMERIC_COLUMNS, d2l_features
from pipelines import blending
from pipelines.cv import cross_validate, make_folds
from pipelines.errors import PipelineError
from pipelines.io import check_numeric, check_unique, md5, read_csv
from pipelines.records import REPO_ROOT
from pipelines.seed import set_seed
from submissions.writer import SubmissionSpec, write_run

NAME = "house-prices"
KAGGLE_SLUG = "house-prices-advanced-regression-techniques"
ID, TARGET = "Id", "SalePrice"
DEFAULT_DIR = REPO_ROOT / "data" / "house-prices"
SHIPPED_MD5 = {"train.csv": "80ccab65fb115cbad143dbbd2bcd5577", "test.csv": "dcec4b79bf9c7317bd9e17789bf888f0"}
PRESETS = ("d2l", "strong")


@dataclass
class HousePricesConfig:
    preset: str = "strong"
    folds: int = 5
    seed: int = 0
    data_dir: str | None = None
    out_dir: str = "submissions"
    test_pred: str = "refit"  # "refit" on all training rows, or "average" the fold models
    models: list[str] | None = None  # strong: subset of STRONG_MODELS (default: all)
    params: dict[str, dict] = field(default_factory=dict)  # strong: per-model hyperparameter overrides
    progress: bool = True
    extra_record: dict = field(default_factory=dict)  # merged into the run record (e.g. tuning study/trial)


# ``on_fold_end(model, fold, running_cv)``: called after every fold of every model (tuners report and prune)
FoldHook = Callable[[str, int, float], None]


# ---------------------------------------------------------------------------------------------- data
def load(data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read train/test in the Kaggle layout and refuse bad input with a one-line error."""
    folder = Path(data_dir) if data_dir else DEFAULT_DIR
    if not folder.is_dir():
        raise PipelineError(f"--data-dir {folder}: no such folder")
    if folder.resolve() == DEFAULT_DIR.resolve():
        for name, expected in SHIPPED_MD5.items():
            if (folder / name).is_file() and md5(folder / name) != expected:
                raise PipelineError(f"{folder / name}: md5 differs from the shipped Kaggle file ({expected})")
    train = read_csv(folder / "train.csv", required=[ID, TARGET])
    test = read_csv(folder / "test.csv", required=[ID])
    missing = [c for c in train.columns if c != TARGET and c not in test.columns]
    if missing:
        raise PipelineError(f"{folder / 'test.csv'}: missing column(s) {', '.join(map(repr, missing[:5]))}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for frame, name in ((train, folder / "train.csv"), (test, folder / "test.csv")):
        check_unique(frame, ID, str(name))
        check_numeric(frame, [ID, *NUMERIC_COLUMNS, TARGET], str(name))
    y = train[TARGET]
    if y.isna().any() or not np.isfinite(y).all() or (y <= 0).any():
        raise PipelineError(f"{folder / 'train.csv'}: {TARGET} must be a positive number on every row")
    test = test[[c for c in train.columns if c != TARGET]]
    return train, test


def outlier_mask(train: pd.DataFrame) -> np.ndarray:
    """The two documented outliers: partial sales of huge houses (GrLivArea > 4000, price < 300k)."""
    return ((train["GrLivArea"] > 4000) & (train[TARGET] < 300_000)).to_numpy()


def log_rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """The competition metric: RMSE between logs; predictions clamped to >= 1 as in d2l."""
    return blending.rmse(np.log(y), np.log(np.clip(pred, 1, None)))


# ------------------------------------------------------------------------------------------ presets
def run_d2l(train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray, cfg: HousePricesConfig) -> dict:
    """d2l's linear regression through the shared training loop; returns per-model CV results."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pipelines.training import Trainer

    X, X_test = (torch.tensor(a) for a in d2l_features(train.drop(columns=[ID, TARGET]), test.drop(columns=[ID])))
    y = torch.tensor(train[TARGET].to_numpy(), dtype=torch.float32).reshape(-1, 1)

    def fit(idx: np.ndarray, seed: int) -> Trainer:
        torch.manual_seed(seed)
        net = nn.Linear(X.shape[1], 1)
        loader = DataLoader(TensorDataset(X[idx], y[idx]), batch_size=64, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=5, weight_decay=0), nn.MSELoss(), device="cpu")
        trainer.fit(loader, epochs=100)
        return trainer

    def predict(trainer: Trainer, features: torch.Tensor) -> np.ndarray:
        return trainer.predict(DataLoader(features, batch_size=1024)).numpy().ravel()

    def fit_predict(tr, va, k):
        trainer = fit(tr, cfg.seed * 1000 + k)
        return predict(trainer, X[va]), (predict(trainer, X_test) if cfg.test_pred == "average" else None)

    refit = (lambda idx: predict(fit(idx, cfg.seed * 1000 + 999), X_test)) if cfg.test_pred == "refit" else None
    result = cross_validate(fit_predict, folds, train[TARGET].to_numpy(), log_rmse, refit=refit,
                            progress=cfg.progress, desc="d2l linear")
    return {"linear": result}


def run_strong(train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray, cfg: HousePricesConfig, *,
               on_fold_end: FoldHook | None = None, feature_cache: dict | None = None) -> dict:
    """Fit every strong model on the same folds; the preprocessing is fitted once per fold, on its rows.

    ``feature_cache`` keeps the per-fold matrices across calls on the same data and folds (a tuner's
    trials only change model parameters, so the preprocessing need not be refitted every trial).
    """
    from pipelines.house_models import make_model, make_preprocessor, model_names

    names = model_names(cfg.models)
    X, X_test = train.drop(columns=[ID, TARGET]), test.drop(columns=[ID])
    y = np.log1p(train[TARGET].to_numpy())
    fit_mask = ~outlier_mask(train)
    cache: dict = {} if feature_cache is None else feature_cache

    def features(key, fit_idx: np.ndarray, *predict_frames: pd.DataFrame):
        if key not in cache:
            prep = make_preprocessor().fit(X.iloc[fit_idx])
            cache[key] = (prep.transform(X.iloc[fit_idx]), *(prep.transform(f) for f in predict_frames))
        return cache[key]

    results = {}
    for name in names:
        params = cfg.params.get(name, {})

        def fit_predict(tr, va, k, name=name, params=params):
            Xtr, Xva, Xte = features(k, tr, X.iloc[va], X_test)
            model = make_model(name, cfg.seed, **params).fit(Xtr, y[tr])
            return model.predict(Xva), (model.predict(Xte) if cfg.test_pred == "average" else None)

        def refit(idx, name=name, params=params):
            Xtr, Xte = features("all", idx, X_test)
            return make_model(name, cfg.seed, **params).fit(Xtr, y[idx]).predict(Xte)

        results[name] = cross_validate(
            fit_predict, folds, y, blending.rmse, fit_mask=fit_mask, score_mask=fit_mask,
            refit=refit if cfg.test_pred == "refit" else None, progress=cfg.progress, desc=name,
            on_fold_end=None if on_fold_end is None else (lambda k, mean, name=name: on_fold_end(name, k, mean)),
        )
    return results


# ------------------------------------------------------------------------------------------ the run
def run_pipeline(cfg: HousePricesConfig, *, write: bool = True, on_fold_end: FoldHook | None = None,
                 feature_cache: dict | None = None) -> dict:
    """Load → folds → CV per model → blend → write. Returns a summary including the written paths.

    ``write=False`` stops after the CV (a tuning trial's score); ``on_fold_end`` and ``feature_cache``
    go to ``run_strong`` (strong preset only).
    """
    if cfg.preset not in PRESETS:
        raise PipelineError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.test_pred not in ("refit", "average"):
        raise PipelineError(f"--test-pred must be 'refit' or 'average', got {cfg.test_pred!r}")
    set_seed(cfg.seed)
    start = time.perf_counter()
    train, test = load(cfg.data_dir)
    folds = make_folds(np.log(train[TARGET].to_numpy()), cfg.folds, "binned", cfg.seed)
    price = train[TARGET].to_numpy()
    # strong leaves the two outliers out of fitting and scoring; d2l, as in the book, fits and scores every row
    scored = ~outlier_mask(train) if cfg.preset == "strong" else np.ones(len(train), bool)

    if cfg.preset == "d2l":
        results = run_d2l(train, test, folds, cfg)
        log_space = False
    else:
        results = run_strong(train, test, folds, cfg, on_fold_end=on_fold_end, feature_cache=feature_cache)
        log_space = True

    names = list(results)
    to_price = np.expm1 if log_space else (lambda a: a)
    oof = np.column_stack([to_price(results[n].oof) for n in names])  # (rows, models), prices
    test_preds = np.column_stack([to_price(results[n].test) for n in names])
    log_oof = np.log(np.clip(oof, 1, None))
    log_y = np.log(price)
    weights = blending.fit_simplex_weights(log_oof[scored], log_y[scored])
    blend_fold_scores = (
        blending.cross_fitted_scores(log_oof, log_y, folds, mask=scored) if len(names) > 1
        else results[names[0]].fold_scores
    )
    blend_oof = np.exp(blending.blend(log_oof, weights))
    blend_test = np.exp(blending.blend(np.log(np.clip(test_preds, 1, None)), weights))
    cv_mean, cv_std = float(np.mean(blend_fold_scores)), float(np.std(blend_fold_scores))
    all_rows = log_rmse(price, blend_oof)
    seconds = time.perf_counter() - start
    if not write:
        return {"cv_mean": cv_mean, "cv_std": cv_std, "cv_all_rows": all_rows, "seconds": seconds,
                "models": {n: {"cv_mean": results[n].mean, "weight": float(w)} for n, w in zip(names, weights,
                                                                                            strict=True)}}

    per_model = {
        n: {"cv_mean": results[n].mean, "cv_std": results[n].std, "fold_scores": results[n].fold_scores,
            "all_rows_cv": log_rmse(price, oof[:, i]), "fold_seconds": results[n].fold_seconds,
            "weight": float(weights[i])}
        for i, n in enumerate(names)
    }
    submission = pd.DataFrame({ID: test[ID].to_numpy(), TARGET: blend_test})
    oof_frame = pd.DataFrame({ID: train[ID].to_numpy(), "fold": folds, TARGET: price, "prediction": blend_oof,
                              "scored": scored, **{f"oof_{n}": oof[:, i] for i, n in enumerate(names)}})
    record = {
        "kaggle_competition": KAGGLE_SLUG,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "metric": "log_rmse",
        "cv_mean": cv_mean,
        "cv_std": cv_std,
        "fold_scores": blend_fold_scores,
        "cv_all_rows": all_rows,
        "scored_rows": int(scored.sum()),
        "excluded_from_fit_and_score": train[ID][~scored].tolist(),
        "blend_weights": dict(zip(names, map(float, weights), strict=True)),
        "models": per_model,
        "folds": {"strategy": "binned", "n_splits": cfg.folds, "ids": folds},
        "timings": {"total_seconds": seconds},
        **cfg.extra_record,
    }
    spec = SubmissionSpec(NAME, [ID, TARGET], ids=test[ID], positive=True)
    figure = plot_run({**per_model, "blend": {"fold_scores": blend_fold_scores}}, price, blend_oof, scored,
                      f"{cfg.preset}: CV {cv_mean:.4f}")
    files = write_run(submission, spec, out_dir=cfg.out_dir, preset=cfg.preset, cv_score=cv_mean, record=record,
                      oof=oof_frame, figures={"cv": figure})
    return {"cv_mean": cv_mean, "cv_std": cv_std, "cv_all_rows": all_rows, "models": per_model,
            "weights": record["blend_weights"], "files": files, "seconds": seconds}


def plot_run(per_model: dict, y: np.ndarray, oof: np.ndarray, scored: np.ndarray, title: str):
    """Fold scores per model, and OOF predicted vs true price (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, info in per_model.items():
        style = {"color": "black", "lw": 2.5} if name == "blend" else {}
        ax1.plot(range(len(info["fold_scores"])), info["fold_scores"], marker="o", label=name, **style)
    ax1.set(xlabel="fold", ylabel="log-RMSE", title="fold scores", xticks=range(len(info["fold_scores"])))
    ax1.legend(fontsize=8)
    ax2.scatter(y[scored], oof[scored], s=4, alpha=0.5, label="scored")
    ax2.scatter(y[~scored], oof[~scored], s=20, c="red", label="known outliers")
    lims = [min(y.min(), oof.min()), max(y.max(), oof.max())]
    ax2.plot(lims, lims, "k--", lw=1)
    ax2.set(xscale="log", yscale="log", xlabel="true price", ylabel="OOF prediction", title="out-of-fold")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default="strong")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="folder with train.csv/test.csv (default: data/house-prices)")
    parser.add_argument("--test-pred", choices=("refit", "average"), default="refit",
                        help="test predictions from a refit on all rows, or the average of the fold models")
    parser.add_argument("--models", default=None, help="strong preset: comma-separated subset of models")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> HousePricesConfig:
    return HousePricesConfig(
        preset=args.preset, folds=args.folds, seed=args.seed, data_dir=args.data_dir, out_dir=args.out_dir,
        test_pred=args.test_pred, models=args.models.split(",") if args.models else None,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = run_pipeline(cfg)
    for name, info in out["models"].items():
        print(f"{name:>10}: CV {info['cv_mean']:.5f} ± {info['cv_std']:.5f}  (all rows {info['all_rows_cv']:.5f})"
              f"  weight {info['weight']:.3f}")
    print(f"{cfg.preset} blend: {cfg.folds}-fold CV log-RMSE {out['cv_mean']:.5f} ± {out['cv_std']:.5f}"
          f" (all rows incl. outliers {out['cv_all_rows']:.5f}) in {out['seconds']:.1f}s")
    print(f"submission: {out['files'].submission}")
    return 0
