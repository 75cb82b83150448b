"""The shared cross-validation core: one splitter and one driver for every pipeline.

Fold ids are computed once per run (seeded) and stored with it, so that runs can be blended and
compared on exactly the same folds. The driver is model-agnostic: it calls ``fit_predict(train_idx,
valid_idx, fold)`` and collects out-of-fold predictions for every training row, fold scores and test
predictions, whether the model is a scikit-learn pipeline or a network trained by the shared loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

from pipelines.core.errors import PipelineError
from pipelines.core.seed import seed32

STRATEGIES = ("kfold", "stratified", "binned", "group")
MIN_ROWS_PER_FOLD = 2  # a fold scores on at least two rows


class FoldSplitter:
    """K-fold splitter with scikit-learn's ``split(X, y, groups)`` signature.

    ``strategy``: ``kfold`` (shuffled), ``stratified`` (classification labels), ``binned`` (regression:
    stratified on ``n_bins`` quantile bins of the target) or ``group`` (no group in two folds).
    """

    def __init__(self, n_splits: int = 5, strategy: str = "kfold", seed: int = 0, n_bins: int = 10):
        if strategy not in STRATEGIES:
            raise PipelineError(f"unknown fold strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if n_splits < 2:
            raise PipelineError(f"--folds must be at least 2, got {n_splits}")
        self.n_splits, self.strategy, self.seed, self.n_bins = n_splits, strategy, seed, n_bins

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(X)
        if self.strategy == "kfold":
            yield from KFold(self.n_splits, shuffle=True, random_state=self.seed).split(np.zeros(n))
        elif self.strategy == "stratified":
            yield from StratifiedKFold(self.n_splits, shuffle=True, random_state=self.seed).split(
                np.zeros(n), np.asarray(y)
            )
        elif self.strategy == "binned":  # no more bins than keep n_splits rows each (small data)
            bins = _quantile_bins(np.asarray(y, dtype=float), max(1, min(self.n_bins, n // self.n_splits)))
            yield from StratifiedKFold(self.n_splits, shuffle=True, random_state=self.seed).split(
                np.zeros(n), bins
            )
        else:
            if groups is None:
                raise PipelineError("group folds need a groups column")
            # not GroupKFold(shuffle=True) (scikit-learn >= 1.6): that one deals shuffled groups out in equal numbers
            # per fold, whatever their sizes (200 rows in 40 random groups: folds of 30..52 rows, here 40 each), and
            # its folds are not these. This is GroupKFold's own rule, the largest group into the lightest fold
            # (folds even in rows); the seeded permutation of the labels breaks its ties between equal sizes
            uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
            perm = np.random.default_rng(self.seed).permutation(len(uniq))
            yield from GroupKFold(self.n_splits).split(np.zeros(n), groups=perm[inv])


class RepeatedFoldSplitter:
    """``n_repeats`` independent K-fold splits (repeat ``r`` is ``FoldSplitter`` seeded ``seed + r``).

    One split of 1460 rows is too noisy to choose between two close models; averaging the score over
    several splits is scikit-learn's ``RepeatedKFold``, with the same ``split(X, y, groups)`` signature.
    Repeat 0 is exactly ``FoldSplitter(seed=seed)``, so a one-repeat run and its repeats share folds.
    """

    def __init__(self, n_splits: int = 5, n_repeats: int = 1, strategy: str = "kfold", seed: int = 0,
                 n_bins: int = 10):
        if n_repeats < 1:
            raise PipelineError(f"--repeats must be at least 1, got {n_repeats}")
        self.splitters = [FoldSplitter(n_splits, strategy, seed32(seed + r), n_bins) for r in range(n_repeats)]
        self.n_splits, self.n_repeats = n_splits, n_repeats

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits * self.n_repeats

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for splitter in self.splitters:
            yield from splitter.split(X, y, groups)


def _quantile_bins(y: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ids of ``y`` between its ``n_bins`` quantiles, a value on an edge in the bin above it. Not ``pd.qcut``:
    its bins are closed on the right, so the rows on an edge (23 of house prices' 1460 log prices at 5 bins)
    land in the bin below, and the stratified folds built on them differ (on 1162 rows at seed 0)."""
    edges = np.unique(np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.digitize(y, edges)


def make_folds(n_rows_or_y, n_splits: int = 5, strategy: str = "kfold", seed: int = 0, groups=None) -> np.ndarray:
    """Return the fold id (0..n_splits-1) of every row; the array is what a run record stores."""
    y = np.asarray(n_rows_or_y) if not np.isscalar(n_rows_or_y) else None
    n = len(y) if y is not None else int(n_rows_or_y)
    if n < MIN_ROWS_PER_FOLD * n_splits:
        raise PipelineError(f"{n} training rows are too few for {n_splits}-fold CV: it needs at least "
                            f"{MIN_ROWS_PER_FOLD * n_splits} ({MIN_ROWS_PER_FOLD} per fold); lower --folds or add rows")
    folds = np.full(n, -1, dtype=int)
    splitter = FoldSplitter(n_splits, strategy, seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(n), y, groups)):
        folds[valid] = k
    return folds


def make_repeated_folds(n_rows_or_y, n_splits: int = 5, n_repeats: int = 1, strategy: str = "kfold", seed: int = 0,
                        groups=None) -> np.ndarray:
    """Fold ids of every row in every repeat, shape ``(n_repeats, rows)``; row 0 is ``make_folds(..., seed)``."""
    RepeatedFoldSplitter(n_splits, n_repeats, strategy, seed)  # validates the arguments
    return np.stack([make_folds(n_rows_or_y, n_splits, strategy, seed32(seed + r), groups) for r in range(n_repeats)])


@dataclass
class CVResult:
    """Everything a run needs to record: OOF predictions for every row, per-fold scores, test preds."""

    oof: np.ndarray
    fold_scores: list[float]
    folds: np.ndarray
    test: np.ndarray | None = None
    fold_seconds: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))


FitPredict = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, "np.ndarray | None"]]


def cross_validate(
    fit_predict: FitPredict,
    folds: np.ndarray,
    y: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    score_mask: np.ndarray | None = None,
    fit_mask: np.ndarray | None = None,
    refit: Callable[[np.ndarray], np.ndarray] | None = None,
    on_fold_end: Callable[[int, float], None] | None = None,
    only_folds: list[int] | None = None,
    progress: bool = False,
    desc: str = "cv",
    n_jobs: int = 1,
) -> CVResult:
    """Fit one model per fold and collect out-of-fold predictions for every training row.

    ``fit_predict(train_idx, valid_idx, fold)`` returns ``(valid_pred, test_pred_or_None)``.
    ``fit_mask`` drops rows from *fitting* only (e.g. outliers): every row still gets a prediction.
    ``score_mask`` restricts which rows count in the fold scores. Test predictions are the fold
    average, unless ``refit(train_idx)`` is given: then one more model is fit on all (fit-masked) rows.
    ``on_fold_end(fold, running_mean)`` lets a tuner report and prune after each fold.

    ``n_jobs`` > 1 fits that many folds (and the refit) side by side on threads: for a model that fits on
    one thread, releases the GIL and draws nothing from a global generator, so its result does not depend
    on the order (or for a ``fit_predict`` that waits on a process of its own). The folds are still scored
    and reported in order; an exception raised by ``on_fold_end`` (a pruned trial, a spent time budget)
    cancels the folds not yet started and waits for the running ones, Ctrl-C or SIGTERM does not wait.
    """
    n = len(folds)
    fit_mask = np.ones(n, bool) if fit_mask is None else np.asarray(fit_mask, bool)
    score_mask = np.ones(n, bool) if score_mask is None else np.asarray(score_mask, bool)
    oof, test_preds, scores, seconds = None, [], [], []
    fold_list = sorted(set(folds.tolist())) if only_folds is None else only_folds
    splits = []
    for k in fold_list:
        valid_idx = np.flatnonzero(folds == k)
        train_idx = np.flatnonzero((folds != k) & fit_mask)
        if not len(train_idx) or not len(valid_idx[score_mask[valid_idx]]):
            what = "fit on" if not len(train_idx) else "score"
            raise PipelineError(f"fold {k} has no rows to {what} ({n} rows, {int((~fit_mask).sum())} left out of "
                                f"fitting, {int((~score_mask).sum())} of scoring): add rows or lower --folds")
        splits.append((k, train_idx, valid_idx))

    def timed(fn, *args):
        start = time.perf_counter()
        return fn(*args), time.perf_counter() - start

    with _Runner(n_jobs) as run:
        futures = [run(timed, fit_predict, train_idx, valid_idx, k) for k, train_idx, valid_idx in splits]
        refit_future = run(timed, refit, np.flatnonzero(fit_mask)) if refit is not None else None
        iterator = zip(splits, futures, strict=True)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(splits), desc=desc, leave=False)
        for (k, _, valid_idx), future in iterator:
            (valid_pred, test_pred), fold_seconds = future.result()
            valid_pred = np.asarray(valid_pred)
            if oof is None:
                oof = np.full((n, *valid_pred.shape[1:]), np.nan)
            oof[valid_idx] = valid_pred
            scored = valid_idx[score_mask[valid_idx]]
            scores.append(float(metric(np.asarray(y)[scored], oof[scored])))
            if test_pred is not None:
                test_preds.append(np.asarray(test_pred))
            seconds.append(fold_seconds)
            if on_fold_end is not None:
                on_fold_end(k, float(np.mean(scores)))
        if refit_future is not None:
            test = np.asarray(refit_future.result()[0])
        else:
            test = np.mean(test_preds, axis=0) if test_preds else None
    return CVResult(oof=oof, fold_scores=scores, folds=folds, test=test, fold_seconds=seconds)


class _Runner:
    """``run(fn, *args)`` gives something with ``result()``: with ``n_jobs`` 1 the call itself, made when its
    result is asked for (the serial loop, so a pruned trial fits no further fold), else a future of a pool of
    ``n_jobs`` threads. Leaving the block early (an exception) cancels the calls not yet started."""

    def __init__(self, n_jobs: int):
        self.pool = ThreadPoolExecutor(n_jobs) if n_jobs > 1 else None

    def __enter__(self):
        return self

    def __call__(self, fn, *args):
        return self.pool.submit(fn, *args) if self.pool is not None else _Later(fn, args)

    def __exit__(self, exc_type, *exc) -> None:
        if self.pool is not None:  # Ctrl-C or SIGTERM: the caller stops what is running, it is not waited for here
            interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
            self.pool.shutdown(wait=not interrupted, cancel_futures=True)


class _Later:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)
