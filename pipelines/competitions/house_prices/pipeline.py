"""House Prices: raw CSVs → honest K-fold CV → validated submission.

Presets:
- ``d2l``: the classic d2l recipe, exactly (standardize over train+test, NaN → 0, one-hot with NaN
  indicator, one ``nn.Linear``, Adam lr 5, batch 64, 100 epochs, MSE on the raw price).
- ``strong`` (default): domain imputation, ordinal maps, engineered features, skew correction and
  one-hot inside every fold; a zoo of models on ``log1p(price)`` (``estimators.py`` beside this file) and a
  level-2 stack: non-negative weights summing to one, fitted on the out-of-fold predictions, and an
  extrapolation guard (``guard``: where the linear and the tree models disagree widely, the trees' price).

Every CV here scores every training row, as the leaderboard will. Which models are fitted without the
two documented outliers (huge partial sales) is an option: ``--drop-outliers`` (every model),
``--keep-outliers`` (none) or the strong preset's default, the smooth models only (``SMOOTH_MODELS``:
two high-leverage rows tilt a linear fit for every house, while trees isolate them and learn from them).
The run reports their out-of-fold errors and, for comparison only, the CV with them unscored.
``--repeats R`` scores R independent K-fold splits.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.house import d2l_features, is_numeric_column, skipped_features
from pipelines.competitions.house_prices import COMPETITION, stack_loss
from pipelines.core import blending, metrics, tracking
from pipelines.core.budget import OverBudget, TimeBudget
from pipelines.core.cv import CVResult, cross_validate, make_repeated_folds
from pipelines.core.errors import PipelineError
from pipelines.core.files import md5
from pipelines.core.records import RunRecord
from pipelines.core.seed import seed32, set_seed
from pipelines.core.tables import check_numeric, check_unique, read_csv
from submissions.writer import SubmissionSpec, check_writable_dir, write_run

NAME, KAGGLE_SLUG, DEFAULT_DIR = COMPETITION.name, COMPETITION.kaggle_slug, COMPETITION.default_data  # registered once
ID, TARGET = "Id", "SalePrice"
SHIPPED_MD5 = {"train.csv": "80ccab65fb115cbad143dbbd2bcd5577", "test.csv": "dcec4b79bf9c7317bd9e17789bf888f0"}
PRESETS = ("d2l", "strong", "best")
# the lowest SalePrice accepted: the metric clamps every prediction below 1 to 1 (a log of 0), so a lower price
# can never be predicted and its log would pull every fit (0.001 is -6.9 in log price, the shipped houses
# 10.5..13.5). The upper side is ``tables.MAX_ABS`` (1e12), refused in every numeric column. The shipped prices
# are 34,900..755,000; a file in thousands of dollars (34.9..755) still passes
MIN_PRICE = 1.0
# the columns the documented-outlier rule reads (``outlier_mask``); without them no row is marked
OUTLIER_COLUMNS = ("GrLivArea",)
# leave the two documented outliers out of fitting? d2l: no (the book fits every row); strong: the smooth
# models only (None), chosen on the all-rows repeated CV (docs/house-prices.md)
DROP_OUTLIERS_DEFAULT: dict[str, bool | None] = {"d2l": False, "strong": None, "best": None}
# the extrapolation guard (``guard``): a row on which the extrapolating and the bounded models disagree by more
# than this in log price (a factor of 1.65) gets the bounded models' price. On 8 repeats of 5-fold CV it moved
# one row, outlier Id 1299 when Id 524 was in training, each time for the better; on the test set it moves one
# house, Id 2550, a huge partial sale like them (docs/house-prices.md)
GUARD_LOG_GAP = 0.5
# ``--preset best`` stays within AutoGluon best_quality's 15 minutes unless ``--time-limit`` says otherwise
BEST_TIME_LIMIT = 900.0


@dataclass
class HousePricesConfig:
    preset: str = "strong"
    folds: int = 5
    repeats: int = 1  # repeated K-fold: repeat r uses fold seed ``seed + r``
    seed: int = 0
    drop_outliers: bool | None = None  # fit every model without the two outliers / none (None: preset default)
    data_dir: str | None = None
    out_dir: str = "submissions"
    test_pred: str = "refit"  # "refit" on all training rows, or "average" the fold models
    models: list[str] | None = None  # strong: models of the zoo (default: DEFAULT_MODELS, or FAST_MODELS if fast)
    fast: bool = False  # strong: the quick model set (FAST_MODELS)
    params: dict[str, dict] = field(default_factory=dict)  # strong: per-model hyperparameter overrides
    time_limit: float | None = None  # seconds: stop adding models once the next would overrun (``TimeBudget``)
    progress: bool = True
    extra_record: dict = field(default_factory=dict)  # merged into the run record (e.g. tuning study/trial)


# ``on_fold_end(model, fold, running_cv)``: called after every fold of every model (tuners report and prune)
FoldHook = Callable[[str, int, float], None]


# ---------------------------------------------------------------------------------------------- data
def load(data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read train/test in the Kaggle layout and refuse bad input with a one-line error, before any work.

    Only ``Id`` and ``SalePrice`` are required (the features adapt to the other columns: ``skipped``); every
    Id must be given and unique, the prices at least ``MIN_PRICE``, the numeric columns numbers in both files.
    """
    folder = COMPETITION.data_folder(data_dir)
    if not folder.is_dir():
        raise PipelineError(f"--data-dir {folder}: no such folder")
    if folder.resolve() == DEFAULT_DIR.resolve():
        for name, expected in SHIPPED_MD5.items():
            if (folder / name).is_file() and md5(folder / name) != expected:
                raise PipelineError(f"{folder / name}: md5 differs from the shipped Kaggle file ({expected})")
    train_path, test_path = folder / "train.csv", folder / "test.csv"
    train, test = read_csv(train_path), read_csv(test_path)
    check_columns({train_path: ([ID, TARGET], train), test_path: ([ID, *train.columns.drop(TARGET, errors="ignore")],
                                                                   test)})
    if len(train.columns) == 2:
        raise PipelineError(f"{train_path}: no column besides {ID} and {TARGET}: nothing to predict the price from")
    numeric = [c for c in train.columns if c not in (ID, TARGET) and is_numeric_column(c, train[c])]
    for frame, path in ((train, train_path), (test, test_path)):
        check_numeric(frame, [ID, *numeric, TARGET], str(path))
        check_ids(frame, path)
    check_prices(train[TARGET], train_path)
    test = test[[c for c in train.columns if c != TARGET]]
    return train, test


def check_columns(files: dict[Path, tuple[list[str], pd.DataFrame]]) -> None:
    """One line naming every column missing from every file (``{path: (needed, frame)}``), or nothing."""
    def names(cols: list[str]) -> str:
        return ", ".join(map(repr, cols[:10])) + (f" and {len(cols) - 10} more" if len(cols) > 10 else "")

    missing = {path: list(dict.fromkeys(c for c in need if c not in frame)) for path, (need, frame) in files.items()}
    if any(missing.values()):
        raise PipelineError("; ".join(f"{path}: missing column(s) {names(cols)}" for path, cols in missing.items()
                                      if cols))


def check_ids(frame: pd.DataFrame, path: Path) -> None:
    """Every row has its own Id: a blank or repeated one would only be found when the submission is checked,
    after the whole CV."""
    blank = np.flatnonzero(frame[ID].isna().to_numpy())
    if len(blank):
        more = f", and {len(blank) - 1} more" if len(blank) > 1 else ""
        raise PipelineError(f"{path}: blank {ID} on line {blank[0] + 2}{more}")
    check_unique(frame, ID, str(path))


def check_prices(price: pd.Series, path: Path) -> None:
    """Refuse a price below ``MIN_PRICE`` (or missing): absurd on the low side, as ``tables.MAX_ABS`` is on the high."""
    values = price.to_numpy(dtype=float, na_value=np.nan)
    bad = np.flatnonzero(~(values >= MIN_PRICE))  # NaN too
    if len(bad):
        more = f", and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise PipelineError(f"{path}: {TARGET} must be a positive price of at least {MIN_PRICE:g} on every row (the "
                            f"metric clamps prices below 1): {values[bad[0]]:g} on line {bad[0] + 2}{more}")


def skipped(cfg: HousePricesConfig, train: pd.DataFrame) -> dict[str, list[str]]:
    """What the data's missing columns switch off: each engineered feature the strong preset skips, and the
    documented-outlier rule; name -> the columns it lacks (empty on the shipped data)."""
    out = skipped_features(train.columns) if cfg.preset != "d2l" else {}
    lacking = [c for c in OUTLIER_COLUMNS if c not in train]
    return {**out, "documented outliers": lacking} if lacking else out


def outlier_mask(train: pd.DataFrame) -> np.ndarray:
    """The two documented outliers: partial sales of huge houses (GrLivArea > 4000, price < 300k); no row when
    the data has no GrLivArea (``skipped`` says so)."""
    if any(c not in train for c in OUTLIER_COLUMNS):
        return np.zeros(len(train), bool)
    return ((train["GrLivArea"] > 4000) & (train[TARGET] < 300_000)).to_numpy()


def submission_spec(test: pd.DataFrame) -> SubmissionSpec:
    """What a submission must be: every test Id once, a positive price (``submit`` checks files against it)."""
    return SubmissionSpec(NAME, [ID, TARGET], ids=test[ID], positive=True)


# ------------------------------------------------------------------------------------------ presets
def cv_repeats(fit_predict: Callable, folds: np.ndarray, y: np.ndarray, metric: Callable, *,
               fit_mask: np.ndarray | None, refit: Callable | None, progress: bool, desc: str,
               on_fold_end: Callable[[int, float], None] | None = None, n_jobs: int = 1) -> list[CVResult]:
    """``cross_validate`` once per repeat of ``folds`` (``(repeats, rows)``); the refit runs once, in repeat 0.

    ``fit_predict(train_idx, valid_idx, repeat, fold)``; ``on_fold_end(step, running_cv)`` counts steps over
    all repeats and reports the mean over every fold done so far.
    """
    n_folds, results, done = len(np.unique(folds[0])), [], []
    for r, repeat_folds in enumerate(folds):
        before = sum(done)

        def report(k, mean, r=r, before=before):
            on_fold_end(r * n_folds + k, (before + mean * (k + 1)) / (r * n_folds + k + 1))

        result = cross_validate(
            lambda tr, va, k, r=r: fit_predict(tr, va, r, k), repeat_folds, y, metric, fit_mask=fit_mask,
            refit=refit if r == 0 else None, progress=progress, desc=desc if len(folds) == 1 else f"{desc} r{r}",
            on_fold_end=None if on_fold_end is None else report, n_jobs=n_jobs,
        )
        done += result.fold_scores
        results.append(result)
    return results


def run_d2l(train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray, cfg: HousePricesConfig,
            fit_mask: np.ndarray | None = None) -> dict[str, list[CVResult]]:
    """d2l's linear regression through the shared training loop; returns per-model CV results per repeat."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pipelines.core.training import Trainer

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

    def fit_predict(tr, va, r, k):
        trainer = fit(tr, seed32(cfg.seed * 1000 + 100 * r + k))
        return predict(trainer, X[va]), (predict(trainer, X_test) if cfg.test_pred == "average" else None)

    refit = (lambda idx: predict(fit(idx, seed32(cfg.seed * 1000 + 999)), X_test)) if cfg.test_pred == "refit" else None
    results = cv_repeats(fit_predict, folds, train[TARGET].to_numpy(), metrics.log_rmse, fit_mask=fit_mask,
                         refit=refit, progress=cfg.progress, desc="d2l linear")
    return {"linear": results}


def run_strong(train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray, cfg: HousePricesConfig,
               outliers: np.ndarray | None = None, *, on_fold_end: FoldHook | None = None,
               feature_cache: dict | None = None, budget: TimeBudget | None = None) -> dict[str, list[CVResult]]:
    """Fit every strong model on the same folds; the preprocessing is fitted once per fold, on its rows.

    ``outliers`` marks the rows that the models in ``fitted_without_outliers(cfg)`` are not fitted on.

    ``feature_cache`` keeps the per-fold matrices across calls on the same data and folds (a tuner's
    trials only change model parameters, so the preprocessing need not be refitted every trial).

    ``budget`` (``--time-limit``) drops the models, after the first, that would end past its deadline; their
    names and why are in ``budget.skipped``, and the results hold only the models fitted in full.
    """
    from pipelines.competitions.house_prices.estimators import BEST_PARAMS, FRAME_MODELS, make_model, make_preprocessor

    names = preset_models(cfg)
    budget = budget or TimeBudget(None)
    dropping = fitted_without_outliers(cfg, names)
    X, X_test = train.drop(columns=[ID, TARGET]), test.drop(columns=[ID])
    price = train[TARGET].to_numpy()
    y = np.log1p(price)  # what the models fit; every score is the metric's, on log price (``log1p_score``)
    cache: dict = {} if feature_cache is None else feature_cache

    def features(key, fit_idx: np.ndarray, *predict_frames: pd.DataFrame, frame: bool = False):
        """The fold's matrix (``frame``: the frame before one-hot encoding, for ``FRAME_MODELS``), the
        preprocessing fitted once per fold and training set."""
        key = (len(fit_idx), key)  # the same fold with or without the outliers
        slot = cache.setdefault(key, {})
        if "prep" not in slot:  # fitted and applied to its rows in one pass
            prep = make_preprocessor()
            slot["fit_rows"], slot["prep"] = prep.fit_transform(X.iloc[fit_idx]), prep
        kind = "frame" if frame else "matrix"
        if kind not in slot:
            step = slot["prep"][:-1] if frame else slot["prep"]
            rows = step.transform(X.iloc[fit_idx]) if frame else slot["fit_rows"]
            slot[kind] = (rows, *(step.transform(f) for f in predict_frames))
        return slot[kind]

    results = {}
    for name in names:
        params = {**(BEST_PARAMS.get(name, {}) if cfg.preset == "best" else {}), **cfg.params.get(name, {})}

        def fit_predict(tr, va, r, k, name=name, params=params):
            Xtr, Xva, Xte = features((r, k), tr, X.iloc[va], X_test, frame=name in FRAME_MODELS)
            model = make_model(name, cfg.seed, **params).fit(Xtr, y[tr])
            return model.predict(Xva), (model.predict(Xte) if cfg.test_pred == "average" else None)

        def refit(idx, name=name, params=params):
            Xtr, Xte = features("refit", idx, X_test, frame=name in FRAME_MODELS)
            return make_model(name, cfg.seed, **params).fit(Xtr, y[idx]).predict(Xte)

        first = not results
        if not budget.admit(name, first):
            continue
        fits = len(folds) * len(np.unique(folds[0])) + (cfg.test_pred == "refit")  # every fold's fit, the refit
        model_start = time.perf_counter()

        def fold_end(step, mean, name=name, first=first, fits=fits, model_start=model_start):
            budget.check(name, step + 1, fits, model_start, first)
            if on_fold_end is not None:
                on_fold_end(name, step, mean)

        try:
            results[name] = cv_repeats(
                fit_predict, folds, price, log1p_score, fit_mask=~outliers if name in dropping else None,
                refit=refit if cfg.test_pred == "refit" else None, progress=cfg.progress, desc=name,
                on_fold_end=fold_end, n_jobs=fold_jobs(name))
        except OverBudget:
            continue
    return results


def fold_jobs(name: str) -> int:
    """How many of model ``name``'s folds fit side by side: one per core the process may use for the models
    whose fit runs on one thread and releases the GIL (``FOLD_THREADS``), else one."""
    from joblib import cpu_count

    from pipelines.competitions.house_prices.estimators import FOLD_THREADS

    return cpu_count() if name in FOLD_THREADS else 1


def preset_models(cfg: HousePricesConfig) -> list[str]:
    """The models a strong or best run fits, in order: ``--models``, else the preset's (``--fast``: the quick
    set), checked against the zoo."""
    from pipelines.competitions.house_prices.estimators import BEST_MODELS, FAST_MODELS, model_names

    default = list(BEST_MODELS) if cfg.preset == "best" else list(FAST_MODELS) if cfg.fast else None
    return model_names(cfg.models or default)


def log1p_score(price: np.ndarray, log1p_pred: np.ndarray) -> float:
    """A strong model's fold score: the metric (``metrics.log_rmse``) of its ``log1p`` prediction, so that each
    model's CV and the stack's headline (``fit_stack``, on log price) are one scale. RMSE in log1p space instead would
    differ from it wherever prices are small (a price of 1 is 0.69 there, 0 in log price)."""
    return metrics.log_rmse(price, np.expm1(log1p_pred))


# ------------------------------------------------------------------------------------------ the run
def fitted_without_outliers(cfg: HousePricesConfig, names: list[str]) -> list[str]:
    """The models of ``names`` that this run fits without the two documented outliers."""
    from pipelines.competitions.house_prices.estimators import SMOOTH_MODELS

    drop = DROP_OUTLIERS_DEFAULT[cfg.preset] if cfg.drop_outliers is None else cfg.drop_outliers
    return [n for n in names if (n in SMOOTH_MODELS if drop is None else drop)]


def outlier_policy(cfg: HousePricesConfig) -> str:
    """``drop``, ``keep`` or ``smooth models drop``: what a study or record says about the outliers."""
    drop = DROP_OUTLIERS_DEFAULT[cfg.preset] if cfg.drop_outliers is None else cfg.drop_outliers
    return "smooth models drop" if drop is None else "drop" if drop else "keep"


def run_pipeline(cfg: HousePricesConfig, *, write: bool = True, on_fold_end: FoldHook | None = None,
                 feature_cache: dict | None = None) -> dict:
    """Load → folds → CV per model → stack → write. Returns a summary including the written paths.

    Every score is on every training row. ``write=False`` stops after the CV (a tuning trial's score);
    ``on_fold_end`` and ``feature_cache`` go to ``run_strong`` (strong preset only).
    """
    check_run_config(cfg, write)
    set_seed(cfg.seed, torch_rng=cfg.preset == "d2l")  # d2l's linear net draws its weights from torch's generator
    start = time.perf_counter()
    budget = TimeBudget(time_limit(cfg), start)
    train, test = load(cfg.data_dir)
    folds = make_repeated_folds(np.log(train[TARGET].to_numpy()), cfg.folds, cfg.repeats, "binned", cfg.seed)
    outliers = outlier_mask(train)
    skips = skipped(cfg, train)
    cv = cv_models(cfg, train, test, folds, outliers, on_fold_end=on_fold_end, feature_cache=feature_cache,
                   budget=budget)
    stack = fit_stack(cv.log_oof, np.log(train[TARGET].to_numpy()), folds, bounded=bounded_models(cv.names),
                      log_test=cv.log_test)
    summary = {**summarise(cfg, train, test, cv, stack, folds, outliers, start), "skipped": skips,
               "time_limit": {"seconds": budget.seconds, "fitted": cv.names, "skipped": budget.skipped}}
    if not write:
        return summary
    return {**summary, "files": write_house_run(cfg, train, test, cv, stack, summary, folds, outliers)}


def time_limit(cfg: HousePricesConfig) -> float | None:
    """``--time-limit``, else the preset's: ``best`` keeps within ``BEST_TIME_LIMIT``, the others have none."""
    return cfg.time_limit if cfg.time_limit is not None else BEST_TIME_LIMIT if cfg.preset == "best" else None


def check_run_config(cfg: HousePricesConfig, write: bool) -> None:
    """Refuse an unknown preset or ``--test-pred``, and an out-dir that cannot be written, before any work."""
    if cfg.preset not in PRESETS:
        raise PipelineError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.fast and cfg.preset != "strong":
        raise PipelineError(f"--fast is the strong preset's quick model set; it does not go with --preset {cfg.preset}")
    if cfg.test_pred not in ("refit", "average"):
        raise PipelineError(f"--test-pred must be 'refit' or 'average', got {cfg.test_pred!r}")
    if write:
        check_writable_dir(Path(cfg.out_dir) / NAME)  # before the CV, not after it


@dataclass
class ModelsCV:
    """The preset's models through the CV: their per-repeat results, and their predictions as log prices."""

    names: list[str]
    results: dict[str, list[CVResult]]
    log_oof: np.ndarray  # (repeats, rows, models) out-of-fold
    log_test: np.ndarray  # (test rows, models): the refit, or every fold model's average


def cv_models(cfg: HousePricesConfig, train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray,
              outliers: np.ndarray, *, on_fold_end: FoldHook | None = None,
              feature_cache: dict | None = None, budget: TimeBudget | None = None) -> ModelsCV:
    """Run the preset's models on ``folds`` (d2l: the book's linear net; strong, best: the zoo) in log price."""
    if cfg.preset == "d2l":
        results = run_d2l(train, test, folds, cfg, ~outliers if fitted_without_outliers(cfg, ["linear"]) else None)
        to_price = lambda a: a  # noqa: E731 - d2l predicts the price itself
    else:
        results = run_strong(train, test, folds, cfg, outliers, on_fold_end=on_fold_end, feature_cache=feature_cache,
                             budget=budget)
        to_price = np.expm1
    names = list(results)
    log_oof = np.stack([np.column_stack([_log(to_price(results[n][r].oof)) for n in names])
                        for r in range(cfg.repeats)])
    log_test = np.column_stack([_log(to_price(np.mean([res.test for res in results[n] if res.test is not None],
                                                      axis=0))) for n in names])
    return ModelsCV(names, results, log_oof, log_test)


def summarise(cfg: HousePricesConfig, train: pd.DataFrame, test: pd.DataFrame, cv: ModelsCV, stack: dict,
              folds: np.ndarray, outliers: np.ndarray, start: float) -> dict:
    """The run's scores: the stack's all-rows CV (and, for comparison only, with the outliers unscored), each
    model's, the stack weights, the outliers' out-of-fold errors and the rows the guard moved."""
    log_y = np.log(train[TARGET].to_numpy())
    stack_excl = fit_stack(cv.log_oof, log_y, folds, mask=~outliers, bounded=stack["bounded"])  # comparison only
    seconds = time.perf_counter() - start
    return {"cv_mean": stack["cv_mean"], "cv_std": stack["cv_std"], "rows": len(train),
            "repeat_means": stack["repeat_means"], "cv_excluding_outliers": stack_excl["cv_mean"],
            "cv_pooled": stack["cv_pooled"], "repeat_averaged": stack.get("repeat_averaged"),
            "outlier_policy": outlier_policy(cfg), "fitted_without_outliers": fitted_without_outliers(cfg, cv.names),
            "models": per_model_scores(cv, log_y, folds, outliers, stack["weights"]),
            "weights": dict(zip(cv.names, map(float, stack["weights"]), strict=True)), "seconds": seconds,
            "outlier_errors": {int(i): float(e) for i, e in zip(train[ID][outliers],
                                                                 (stack["log_oof"] - log_y)[outliers], strict=True)},
            "guarded": {"gap": GUARD_LOG_GAP, "oof_ids": train[ID][stack["moved_oof"]].tolist(),
                        "test_ids": test[ID][stack["moved_test"]].tolist()}}


def per_model_scores(cv: ModelsCV, log_y: np.ndarray, folds: np.ndarray, outliers: np.ndarray,
                     weights: np.ndarray) -> dict[str, dict]:
    """Each model's CV on every row and with the outliers unscored, its fit times and its stack weight."""
    per_model = {}
    for i, n in enumerate(cv.names):
        scores = [s for res in cv.results[n] for s in res.fold_scores]
        excl = [s for r, f in enumerate(folds) for s in metrics.fold_scores(log_y, cv.log_oof[r, :, i], f,
                                                                                mask=~outliers)]
        fold_seconds = [s for res in cv.results[n] for s in res.fold_seconds]
        per_model[n] = {"cv_mean": float(np.mean(scores)), "cv_std": float(np.std(scores)), "fold_scores": scores,
                        "cv_excluding_outliers": float(np.mean(excl)), "fold_seconds": fold_seconds,
                        "fit_seconds": float(np.mean(fold_seconds)), "weight": float(weights[i])}
    return per_model


def write_house_run(cfg: HousePricesConfig, train: pd.DataFrame, test: pd.DataFrame, cv: ModelsCV, stack: dict,
                    summary: dict, folds: np.ndarray, outliers: np.ndarray):
    """The stack's submission, its OOF table (every model's column too), the record and the CV figure,
    through the shared writer; returns the written files."""
    price, blend_oof = train[TARGET].to_numpy(), np.exp(stack["log_oof"])
    submission = pd.DataFrame({ID: test[ID].to_numpy(), TARGET: np.exp(stack["log_test"])})
    per_model_oof = {f"oof_{n}": np.exp(cv.log_oof[0, :, i]) for i, n in enumerate(cv.names)}
    oof_frame = pd.DataFrame({ID: train[ID].to_numpy(), "fold": folds[0], TARGET: price, "prediction": blend_oof,
                              "scored": True, **per_model_oof})
    spec = submission_spec(test)
    figure = plot_run({**summary["models"], "stack": {"fold_scores": stack["fold_scores"]}}, price, blend_oof,
                      outliers, f"{cfg.preset}: CV {summary['cv_mean']:.4f} on all rows")
    record = house_record(cfg, train, stack, summary, folds, outliers)
    return write_run(submission, spec, out_dir=cfg.out_dir, record=record, oof=oof_frame, figures={"cv": figure})


def house_record(cfg: HousePricesConfig, train: pd.DataFrame, stack: dict, summary: dict, folds: np.ndarray,
                 outliers: np.ndarray) -> RunRecord:
    """The run record: config, seed, every repeat's fold ids, the scores and the outlier policy."""
    extra = {
        "repeat_means": stack["repeat_means"],
        "cv_all_rows": summary["cv_mean"],
        "cv_pooled": summary["cv_pooled"],
        "cv_repeat_averaged": summary["repeat_averaged"],
        "cv_excluding_outliers": summary["cv_excluding_outliers"],
        "scored_rows": len(train),
        "excluded_from_score": [],
        "outliers": {"ids": train[ID][outliers].tolist(), "policy": outlier_policy(cfg),
                     "fitted_without": summary["fitted_without_outliers"], "oof_log_error": summary["outlier_errors"]},
        "blend_weights": summary["weights"],
        "guard": summary["guarded"],
        "skipped_for_missing_columns": summary["skipped"],
        "time_limit": summary["time_limit"],
        "models": summary["models"],
        **cfg.extra_record,
    }
    return RunRecord(
        competition=NAME, preset=cfg.preset, cv_mean=summary["cv_mean"], metric=COMPETITION.metric,
        cv_std=summary["cv_std"],
        fold_scores=stack["fold_scores"], seed=cfg.seed, config=asdict(cfg), data_dir=cfg.data_dir,
        folds={"strategy": "binned", "n_splits": cfg.folds, "n_repeats": cfg.repeats,
               "seeds": [cfg.seed + r for r in range(cfg.repeats)], "ids": folds[0], "repeats": folds},
        kaggle_competition=KAGGLE_SLUG, timings={"total_s": summary["seconds"]}, extra=extra,
    )


def _log(price: np.ndarray) -> np.ndarray:
    return np.log(np.clip(price, 1, None))


def bounded_models(names: list[str]) -> np.ndarray:
    """Which of ``names`` stay within the prices they were fitted on (trees, k-NN: ``BOUNDED_MODELS``)."""
    from pipelines.competitions.house_prices.estimators import BOUNDED_MODELS

    return np.array([n in BOUNDED_MODELS for n in names], bool)


def guard(log_preds: np.ndarray, weights: np.ndarray, bounded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stack's log prices, and which rows the extrapolation guard gave the bounded models' price.

    A linear model prices a house outside the rows it was fitted on by extrapolating; trees and k-NN price
    it like the nearest houses they saw. Where the two groups (each its stack-weighted mean; equal weights
    if the stack gave the group none) differ by more than ``GUARD_LOG_GAP``, the row is one that the
    extrapolation decides, so the bounded group's price is taken. A stack of one kind only is unchanged.
    """
    stacked = blending.blend(log_preds, weights)
    if bounded.all() or not bounded.any():
        return stacked, np.zeros(len(stacked), bool)

    def group(members: np.ndarray) -> np.ndarray:
        w = weights[members] if weights[members].sum() > 0 else np.ones(members.sum())
        return blending.blend(log_preds[:, members], w / w.sum())

    inside = group(bounded)
    guarded = np.abs(group(~bounded) - inside) > GUARD_LOG_GAP
    return np.where(guarded, inside, stacked), guarded


def fit_stack(log_oof: np.ndarray, log_y: np.ndarray, folds: np.ndarray, mask: np.ndarray | None = None,
              bounded: np.ndarray | None = None, log_test: np.ndarray | None = None) -> dict:
    """The level-2 stack: non-negative weights summing to one on the models' OOF log prices, then ``guard``.

    The weights minimise a Huber loss (``stack_loss``), the scores are RMSE on every row. Its CV is
    cross-fitted per repeat (``blending.cross_fitted_blend``: the weights scored on a fold never saw it,
    and the guard uses that fold's weights); the weights used for the test set are fitted on every repeat's
    OOF rows at once. Convex weights keep every prediction between the models' own, so no single model's
    extrapolation can be amplified. ``mask`` restricts fitting and scoring to some rows (comparison figures
    only); ``bounded`` marks the models the guard trusts (``bounded_models``; default none: no guard).

    Besides the headline (the mean of the fold RMSEs, as d2l scores K-fold) it returns ``cv_pooled``, the
    RMSE over all rows at once of each repeat's cross-fitted OOF (the leaderboard's form, and AutoGluon's
    OOF score), and with repeats ``repeat_averaged``: each row's mean over the repeats of its out-of-fold
    predictions, all from models and weights that never saw it, scored both ways (what ``--test-pred
    average`` submits: the mean of every fold model). ``log_oof`` is repeat 0's cross-fitted OOF (the OOF
    file's), ``moved_oof`` the rows the guard moved in any repeat; given ``log_test``, ``log_test`` and
    ``moved_test``.
    """
    repeats, rows, n_models = log_oof.shape
    mask = np.ones(rows, bool) if mask is None else mask
    bounded = np.zeros(n_models, bool) if bounded is None else bounded
    weights = blending.fit_simplex_weights(log_oof[:, mask].reshape(-1, n_models), np.tile(log_y[mask], repeats),
                                           stack_loss)
    # one model: its weight is 1 in every fold, so this is the model's own per-fold score
    oofs, moved = zip(*(_cross_fitted_stack(log_oof[r], log_y, folds[r], mask, bounded) for r in range(repeats)),
                      strict=True)
    per_repeat = [metrics.fold_scores(log_y, oof, f, mask=mask) for oof, f in zip(oofs, folds, strict=True)]
    scores = [s for rep in per_repeat for s in rep]
    out = {"weights": weights, "fold_scores": scores, "cv_mean": float(np.mean(scores)),
           "cv_std": float(np.std(scores)), "repeat_means": [float(np.mean(rep)) for rep in per_repeat],
           "cv_pooled": float(np.mean([metrics.rmse(log_y[mask], oof[mask]) for oof in oofs])),
           "bounded": bounded, "log_oof": oofs[0], "moved_oof": np.any(moved, axis=0)}
    if repeats > 1:
        averaged = np.mean(oofs, axis=0)
        out["repeat_averaged"] = {"cv_mean": float(np.mean(metrics.fold_scores(log_y, averaged, folds[0], mask=mask))),
                                  "cv_pooled": metrics.rmse(log_y[mask], averaged[mask])}
    if log_test is not None:
        out["log_test"], out["moved_test"] = guard(log_test, weights, bounded)
    return out


def _cross_fitted_stack(log_oof: np.ndarray, log_y: np.ndarray, folds: np.ndarray, mask: np.ndarray,
                        bounded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One repeat's guarded stack OOF, each fold with weights fitted on the other folds, and the rows the guard
    moved (rows outside ``mask``: NaN, not moved)."""
    oof, fold_weights = blending.cross_fitted_blend(log_oof, log_y, folds, stack_loss, mask,
                                                    lambda p, w: guard(p, w, bounded)[0])
    moved = np.zeros(len(log_y), bool)
    for k, w in fold_weights.items():
        rows = (folds == k) & mask
        moved[rows] = guard(log_oof[rows], w, bounded)[1]
    return oof, moved


def plot_run(per_model: dict, y: np.ndarray, oof: np.ndarray, outliers: np.ndarray, title: str):
    """Fold scores per model (every repeat's folds in a row), and OOF predicted vs true price (log axes)."""
    from pipelines.core.plots import pyplot

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, info in per_model.items():
        style = {"color": "black", "lw": 2.5} if name == "stack" else {}
        ax1.plot(range(len(info["fold_scores"])), info["fold_scores"], marker="o", label=name, **style)
    ax1.set(xlabel="fold", ylabel="log-RMSE", title="fold scores", xticks=range(len(info["fold_scores"])))
    ax1.legend(fontsize=8)
    ax2.scatter(y[~outliers], oof[~outliers], s=4, alpha=0.5, label="rows")
    ax2.scatter(y[outliers], oof[outliers], s=20, c="red", label="the two documented outliers")
    lims = [min(y.min(), oof.min()), max(y.max(), oof.max())]
    ax2.plot(lims, lims, "k--", lw=1)
    ax2.set(xscale="log", yscale="log", xlabel="true price", ylabel="OOF prediction", title="out-of-fold")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default="strong",
                        help="strong (default, under a minute), best (the models the nested check says pay; "
                             "today the default's), d2l (the book's recipe)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeated K-fold: score on this many independent splits (fold seeds seed..seed+R-1)")
    parser.add_argument("--data-dir", default=None, help="folder with train.csv/test.csv (default: data/house-prices)")
    parser.add_argument("--test-pred", choices=("refit", "average"), default="refit",
                        help="test predictions from a refit on all rows, or the average of the fold models")
    parser.add_argument("--models", default=None,
                        help="strong preset: comma-separated models of the zoo (house_prices/estimators.py)")
    parser.add_argument("--fast", action="store_true", help="strong preset: the quick model set (FAST_MODELS)")
    outl = parser.add_mutually_exclusive_group()
    outl.add_argument("--drop-outliers", dest="drop_outliers", action="store_true", default=None,
                      help="fit every model without the two documented outliers (they are still scored); "
                           "default: strong fits its smooth models (linear, kernel, k-NN, MLP) without them")
    outl.add_argument("--keep-outliers", dest="drop_outliers", action="store_false",
                      help="fit every model on every row (d2l's default)")
    parser.add_argument("--time-limit", type=positive_seconds, default=None, metavar="S",
                        help="stop adding models once the next would end past S seconds (the first is always "
                             "fitted); the run names the models it skipped")
    parser.add_argument("--no-progress", action="store_true")


def positive_seconds(text: str) -> float:
    """``--time-limit``'s value: a positive number of seconds (argparse turns the error into one line)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> HousePricesConfig:
    return HousePricesConfig(
        preset=args.preset, folds=args.folds, repeats=args.repeats, seed=args.seed, data_dir=args.data_dir,
        out_dir=args.out_dir, test_pred=args.test_pred, models=args.models.split(",") if args.models else None,
        drop_outliers=args.drop_outliers, fast=args.fast, progress=not args.no_progress, time_limit=args.time_limit,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = run_pipeline(cfg)
    for name, info in out["models"].items():
        print(f"{name:>10}: CV {info['cv_mean']:.5f} ± {info['cv_std']:.5f}  (outliers unscored "
              f"{info['cv_excluding_outliers']:.5f})  weight {info['weight']:.3f}  {info['fit_seconds']:.2f}s/fit")
    if out["skipped"]:
        print("skipped, the data lacking their columns: " + ", ".join(
            f"{name} (no {' '.join(cols)})" for name, cols in out["skipped"].items()))
    errors = ", ".join(f"Id {i} {e:+.2f}" for i, e in out["outlier_errors"].items()) or "none marked"
    without = ", ".join(out["fitted_without_outliers"]) or "none"
    print(f"outliers ({out['outlier_policy']}; fitted without them: {without}): OOF log errors {errors}; "
          f"CV with them unscored {out['cv_excluding_outliers']:.5f} (comparison only)")
    limit = out["time_limit"]
    if limit["skipped"]:
        print(f"time limit {limit['seconds']:g} s: skipped " + "; ".join(f"{n} ({why})" for n, why in
                                                                   limit["skipped"].items()))
    moved = out["guarded"]
    if moved["oof_ids"] or moved["test_ids"]:
        print(f"extrapolation guard (models apart by > {moved['gap']} in log price: the trees' and k-NN's price): "
              f"OOF Ids {moved['oof_ids'] or 'none'} (any repeat), test Ids {moved['test_ids'] or 'none'}")
    spread = f"fold spread ± {out['cv_std']:.5f}"
    if cfg.repeats > 1:
        spread += ", repeat means " + " ".join(f"{m:.5f}" for m in out["repeat_means"])
    print(f"{cfg.preset}: {cfg.repeats}x{cfg.folds}-fold CV log-RMSE on all {out['rows']} rows {out['cv_mean']:.5f}"
          f" ({spread}) in {out['seconds']:.1f}s")
    print(f"  the same OOF pooled over all rows at once (the leaderboard's form, AutoGluon's OOF score): "
          f"{out['cv_pooled']:.5f}")
    if out["repeat_averaged"]:
        avg = out["repeat_averaged"]
        print(f"  each row's mean over the {cfg.repeats} repeats (what --test-pred average submits): "
              f"CV {avg['cv_mean']:.5f}, pooled {avg['cv_pooled']:.5f}")
    print(f"submission: {out['files'].submission}")
    tracking.mirror_run(args, out["files"])  # --mlflow: after the files are written
    return 0
