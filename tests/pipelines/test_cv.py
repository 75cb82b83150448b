"""The shared splitter and CV driver: properties every pipeline relies on."""

import time

import numpy as np
import pytest

from pipelines.core.cv import FoldSplitter, RepeatedFoldSplitter, cross_validate, make_folds, make_repeated_folds
from pipelines.core.errors import PipelineError


@pytest.mark.parametrize("strategy", ["kfold", "stratified", "binned", "group"])
def test_folds_are_disjoint_cover_every_row_and_are_deterministic(strategy):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200) if strategy == "stratified" else rng.lognormal(12, 0.4, 200)
    groups = rng.integers(0, 40, 200)
    folds = make_folds(y, 5, strategy, seed=3, groups=groups)
    assert set(folds) == set(range(5))
    splits = list(FoldSplitter(5, strategy, seed=3).split(np.zeros(200), y, groups))
    valid_sets = [set(v) for _, v in splits]
    assert sum(map(len, valid_sets)) == 200 and set().union(*valid_sets) == set(range(200))
    for train, valid in splits:
        assert not set(train) & set(valid)
    np.testing.assert_array_equal(folds, make_folds(y, 5, strategy, seed=3, groups=groups))
    if strategy != "group":
        assert not np.array_equal(folds, make_folds(y, 5, strategy, seed=4, groups=groups))


def test_stratified_folds_keep_class_proportions():
    y = np.repeat([0, 1, 2], [100, 50, 25])
    folds = make_folds(y, 5, "stratified", seed=0)
    for k in range(5):
        counts = np.bincount(y[folds == k], minlength=3)
        np.testing.assert_array_equal(counts, [20, 10, 5])


def test_binned_folds_balance_the_target_distribution():
    y = np.random.default_rng(0).lognormal(12, 0.5, 1000)
    folds = make_folds(y, 5, "binned", seed=0)
    medians = [np.median(y[folds == k]) for k in range(5)]
    assert max(medians) / min(medians) < 1.05


def test_group_folds_never_split_a_group():
    groups = np.repeat(np.arange(30), 4)
    folds = make_folds(len(groups), 5, "group", seed=0, groups=groups)
    for g in range(30):
        assert len(set(folds[groups == g])) == 1


def test_repeated_splitter_keeps_sklearns_signature_and_repeat_zero_is_the_plain_split():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 3)), rng.lognormal(12, 0.4, 90)
    splitter = RepeatedFoldSplitter(3, n_repeats=2, strategy="binned", seed=5)
    assert splitter.get_n_splits() == 6 and len(cross_val_score(Ridge(), X, y, cv=splitter)) == 6
    folds = make_repeated_folds(y, 3, 2, "binned", seed=5)
    assert folds.shape == (2, 90)
    np.testing.assert_array_equal(folds[0], make_folds(y, 3, "binned", seed=5))
    np.testing.assert_array_equal(folds[1], make_folds(y, 3, "binned", seed=6))
    for r, (_, valid) in enumerate(splitter.split(X, y)):
        assert set(valid) == set(np.flatnonzero(folds[r // 3] == r % 3))
    with pytest.raises(PipelineError, match="--repeats"):
        RepeatedFoldSplitter(3, n_repeats=0)


def test_bad_splitter_arguments_raise_one_line_errors():
    with pytest.raises(PipelineError, match="unknown fold strategy"):
        FoldSplitter(5, "nope")
    with pytest.raises(PipelineError, match="at least 2"):
        FoldSplitter(1)


def test_driver_predicts_every_row_and_never_fits_on_the_validation_fold():
    n = 60
    y = np.arange(n, dtype=float)
    folds = make_folds(n, 3, "kfold", seed=0)
    fit_mask = np.ones(n, bool)
    fit_mask[[5, 17]] = False
    seen = []

    def fit_predict(train_idx, valid_idx, k):
        seen.append((k, set(train_idx)))
        mean = y[train_idx].mean()
        return np.full(len(valid_idx), mean), np.array([mean])

    result = cross_validate(fit_predict, folds, y, lambda a, b: float(np.abs(a - b).mean()), fit_mask=fit_mask)
    assert not np.isnan(result.oof).any()  # masked rows still get an OOF prediction
    for k, train in seen:
        assert not train & set(np.flatnonzero(folds == k))
        assert not train & {5, 17}
    assert len(result.fold_scores) == 3 and result.test.shape == (1,)
    refit = cross_validate(fit_predict, folds, y, lambda a, b: 0.0, refit=lambda idx: np.array([len(idx)]))
    assert refit.test.tolist() == [n]


def test_driver_reports_running_mean_after_each_fold():
    folds = make_folds(30, 3, "kfold", seed=0)
    reports = []
    cross_validate(lambda tr, va, k: (np.full(len(va), float(k)), None), folds, np.zeros(30),
                   lambda a, b: float(np.mean(b)), on_fold_end=lambda k, m: reports.append((k, m)))
    assert reports == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_folds_fitted_side_by_side_give_the_serial_result_in_fold_order():
    y = np.random.default_rng(0).normal(size=60)
    folds = make_folds(60, 4, "kfold", seed=0)

    def fit_predict(train_idx, valid_idx, k):  # a fold's answer depends on its rows only, not on when it runs
        return np.full(len(valid_idx), y[train_idx].mean() + k), np.array([y[train_idx].sum()])

    runs = {}
    for jobs in (1, 2):
        reports = []
        runs[jobs] = cross_validate(fit_predict, folds, y, lambda a, b: float(np.abs(a - b).mean()), n_jobs=jobs,
                                    refit=lambda idx: np.array([len(idx)]),
                                    on_fold_end=lambda k, m, seen=reports: seen.append(k))
        assert reports == [0, 1, 2, 3]
    np.testing.assert_array_equal(runs[1].oof, runs[2].oof)
    assert runs[1].fold_scores == runs[2].fold_scores and runs[2].test.tolist() == [60]


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_exception_after_a_fold_stops_the_folds_not_started(jobs):
    folds = make_folds(50, 5, "kfold", seed=0)
    started = []

    def fit_predict(train_idx, valid_idx, k):
        started.append(k)
        time.sleep(0.05)  # a fit long enough for the driver to stop the pool while later folds wait
        return np.zeros(len(valid_idx)), None

    def prune(k, mean):
        raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        cross_validate(fit_predict, folds, np.zeros(50), lambda a, b: 0.0, on_fold_end=prune, n_jobs=jobs,
                       refit=lambda idx: started.append("refit"))
    # fold 0 and whatever had started beside it or right after it; never the refit, queued last
    assert len(started) <= 2 * jobs - 1 + (jobs > 1) and "refit" not in started
