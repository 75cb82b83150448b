"""House Prices end to end: both presets, the same folds, reproducibility and no leakage."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.house import HouseImputer
from pipelines.competitions.house_prices import pipeline
from pipelines.competitions.house_prices.pipeline import HousePricesConfig, outlier_mask, run_pipeline
from pipelines.core.metrics import rmse


def _run(tmp_path, **kw):
    cfg = HousePricesConfig(out_dir=str(tmp_path), progress=False, **kw)
    return run_pipeline(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # the preset's models and stack, CatBoost shortened (one seed of 300 trees) to keep the suite fast
    strong = _run(out, preset="strong", params={"catboost": {"iterations": 300, "learning_rate": 0.1, "seeds": 1}})
    return {"d2l": _run(out, preset="d2l"), "strong": strong, "out": out}


def test_d2l_preset_reproduces_the_book(runs):
    d2l = runs["d2l"]
    assert 0.16 <= d2l["cv_mean"] <= 0.18, d2l["cv_mean"]


def test_strong_preset_beats_d2l_on_the_same_folds(runs):
    d2l, strong = (json.loads(runs[p]["files"].record.read_text()) for p in ("d2l", "strong"))
    assert d2l["folds"]["ids"] == strong["folds"]["ids"]
    assert all(s < d for s, d in zip(strong["fold_scores"], d2l["fold_scores"], strict=True))
    assert strong["cv_mean"] <= 0.125  # every row scored, the two outliers too (measured 0.119)
    assert strong["cv_excluding_outliers"] < strong["cv_mean"]  # the comparison figure leaves them out
    assert strong["cv_mean"] < d2l["cv_mean"]
    assert abs(sum(strong["blend_weights"].values()) - 1) < 1e-9
    assert min(strong["blend_weights"].values()) >= 0
    assert set(strong["guard"]) == {"gap", "oof_ids", "test_ids"}  # what the extrapolation guard moved, recorded


def test_run_writes_submission_record_oof_and_plot(runs):
    files = runs["strong"]["files"]
    sub = pd.read_csv(files.submission)
    test = pd.read_csv("data/house-prices/test.csv")
    assert list(sub.columns) == ["Id", "SalePrice"] and sub["Id"].tolist() == test["Id"].tolist()
    assert (sub["SalePrice"] > 10_000).all() and (sub["SalePrice"] < 2_000_000).all()
    oof = pd.read_csv(files.oof)
    assert len(oof) == 1460 and oof["prediction"].notna().all()  # outliers too get OOF predictions
    assert oof["scored"].all()
    record = json.loads(files.record.read_text())
    assert record["scored_rows"] == 1460 and record["excluded_from_score"] == []
    assert record["outliers"]["ids"] == [524, 1299] and record["outliers"]["policy"] == "smooth models drop"
    assert record["outliers"]["fitted_without"] == [m for m in record["models"] if m in ("lasso", "svr")]
    assert record["seed"] == 0 and len(record["folds"]["ids"]) == 1460 and record["config"]["preset"] == "strong"
    assert files.figures["cv"].stat().st_size > 10_000
    # the OOF file holds exactly what the CV scores: the stack cross-fitted fold by fold
    log_y, log_pred, folds = np.log(oof["SalePrice"]), np.log(oof["prediction"]), oof["fold"].to_numpy()
    by_fold = [rmse(log_y[folds == k], log_pred[folds == k]) for k in range(5)]
    assert np.mean(by_fold) == pytest.approx(record["cv_mean"]) and by_fold == pytest.approx(record["fold_scores"])
    assert rmse(log_y, log_pred) == pytest.approx(record["cv_pooled"])
    assert record["cv_pooled"] > record["cv_mean"]  # pooled, the two outliers' fold weighs by its rows
    assert record["cv_repeat_averaged"] is None  # one repeat: nothing to average


def test_same_seed_gives_byte_identical_submissions(runs, tmp_path, monkeypatch):
    """The same seed twice gives the same bytes, for the sklearn/LightGBM stack (2 folds, LightGBM shortened;
    its folds fitted side by side or one after another) and for the torch d2l preset (a second run against the
    module's own); another seed gives other bytes."""
    quick = {"preset": "strong", "models": ["lasso", "lgbm"], "folds": 2,
             "params": {"lgbm": {"n_estimators": 300, "learning_rate": 0.1}}}
    a, b = (_run(tmp_path / name, **quick)["files"] for name in ("a", "b"))
    assert a.submission.read_bytes() == b.submission.read_bytes()
    assert a.oof.read_bytes() == b.oof.read_bytes()
    monkeypatch.setattr(pipeline, "fold_jobs", lambda name: 1)  # the same folds fitted one after another
    serial = _run(tmp_path / "s", **quick)["files"]
    assert serial.submission.read_bytes() == a.submission.read_bytes() and serial.oof.read_bytes() == a.oof.read_bytes()
    other = _run(tmp_path / "e", **quick, seed=1)["files"]
    assert not pd.read_csv(other.oof)["prediction"].equals(pd.read_csv(a.oof)["prediction"])  # other folds
    first = runs["d2l"]["files"]
    again = _run(tmp_path / "c", preset="d2l")["files"]
    assert again.submission.read_bytes() == first.submission.read_bytes()
    assert again.oof.read_bytes() == first.oof.read_bytes()


@pytest.mark.parametrize("drop", [None, False])
def test_feature_steps_never_see_validation_rows(tmp_path, monkeypatch, drop):
    fitted_on = []
    original = HouseImputer.fit

    def spy(self, X, y=None):
        fitted_on.append(set(X.index))
        return original(self, X, y)

    monkeypatch.setattr(HouseImputer, "fit", spy)
    out = _run(tmp_path, preset="strong", models=["lasso"], folds=3, drop_outliers=drop)
    record = json.loads(out["files"].record.read_text())
    folds = np.array(record["folds"]["ids"])
    outliers = outlier_mask(pd.read_csv("data/house-prices/train.csv"))
    drop = drop is not False  # the preset's default (None) fits smooth models like lasso without them
    assert outliers.sum() == 2 and record["outliers"]["fitted_without"] == ["lasso"] * drop
    # three folds (fitted side by side, so in any order) + the refit on all rows; --drop-outliers: left out of fitting
    fitted = ~(outliers & drop)
    fits = {frozenset(np.flatnonzero((folds != k) & fitted)) for k in range(3)} | {frozenset(np.flatnonzero(fitted))}
    assert len(fitted_on) == 4 and set(map(frozenset, fitted_on)) == fits
    oof = pd.read_csv(out["files"].oof)
    assert oof["scored"].all() and record["scored_rows"] == 1460  # ... but always scored


def test_repeated_folds_are_recorded_and_every_repeat_is_scored(tmp_path):
    out = _run(tmp_path, preset="strong", models=["ridge"], folds=2, repeats=3)
    record = json.loads(out["files"].record.read_text())
    repeats = np.array(record["folds"]["repeats"])
    assert repeats.shape == (3, 1460) and record["folds"]["seeds"] == [0, 1, 2]
    assert repeats[0].tolist() == record["folds"]["ids"]
    assert len({tuple(r) for r in repeats.tolist()}) == 3  # three different splits
    assert len(record["fold_scores"]) == 6 and len(record["repeat_means"]) == 3
    assert record["cv_mean"] == pytest.approx(np.mean(record["fold_scores"]))
    assert record["cv_mean"] == pytest.approx(np.mean(record["repeat_means"]))


def test_test_pred_average_submits_the_mean_of_every_fold_model_and_fits_nothing_on_all_rows(tmp_path, monkeypatch):
    fitted_on = []
    original = HouseImputer.fit

    def spy(self, X, y=None):
        fitted_on.append(len(X))
        return original(self, X, y)

    monkeypatch.setattr(HouseImputer, "fit", spy)
    quick = {"preset": "strong", "models": ["ridge"], "folds": 2, "repeats": 2, "drop_outliers": False}
    averaged = _run(tmp_path / "avg", **quick, test_pred="average")
    assert len(fitted_on) == 4 and max(fitted_on) < 1460  # 2 x 2 fold models, no refit
    refit = _run(tmp_path / "refit", **quick)
    assert len(fitted_on) == 9 and sorted(fitted_on[4:])[-1] == 1460  # ... the refit on every row
    assert averaged["cv_mean"] == refit["cv_mean"]  # the CV is the same; only the test side differs
    a, b = (pd.read_csv(r["files"].submission)["SalePrice"] for r in (averaged, refit))
    assert not a.equals(b) and np.corrcoef(np.log(a), np.log(b))[0, 1] > 0.99
    record = json.loads(averaged["files"].record.read_text())
    assert record["config"]["test_pred"] == "average" and record["cv_repeat_averaged"]["cv_pooled"] > 0


TINY = {"lgbm": {"n_estimators": 20}, "xgb": {"n_estimators": 20}, "catboost": {"iterations": 20, "seeds": 1},
        "catboost_native": {"iterations": 20, "seeds": 1},
        "hgb": {"max_iter": 20}, "extra": {"n_estimators": 10}, "gbr": {"n_estimators": 20}, "mlp": {"epochs": 2},
        "realmlp": {"n_epochs": 2}, "tabm": {"n_epochs": 2}}


def test_every_zoo_model_and_feature_step_fits_on_training_rows_only(tmp_path, monkeypatch):
    """The leakage spy for the whole zoo: every model and the range clipper see only their fold's rows."""
    import pipelines.competitions.house_prices.estimators as hm
    from features.house import RangeClipper

    # the optional models where installed (TabPFN also needs its local weights: never in the suite)
    names = [n for n in hm.STRONG_MODELS if n != "tabpfn" and hm.optional_installed(n)]
    fitted, clipped = [], []
    original_make, original_clip = hm.make_model, RangeClipper.fit

    def make_model(name, seed=0, **params):
        model = original_make(name, seed, **params)
        fit = model.fit

        def spy(X, y):
            fitted.append((name, len(X)))
            return fit(X, y)

        model.fit = spy
        return model

    def clip_spy(self, X, y=None):
        clipped.append(set(X.index))
        return original_clip(self, X, y)

    monkeypatch.setattr(hm, "make_model", make_model)
    monkeypatch.setattr(RangeClipper, "fit", clip_spy)
    out = _run(tmp_path, preset="strong", models=names, folds=2, params=TINY)
    folds = np.array(json.loads(out["files"].record.read_text())["folds"]["ids"])
    outliers = outlier_mask(pd.read_csv("data/house-prices/train.csv"))

    def sizes(drop: bool) -> list[int]:  # two folds and the refit; smooth models without the two outliers
        return [int(((folds != k) & ~(outliers & drop)).sum()) for k in range(2)] + [1460 - 2 * drop]

    # a model's folds may fit side by side (``FOLD_THREADS``), so in any order
    assert sorted(fitted) == sorted((n, s) for n in names for s in sizes(n in hm.SMOOTH_MODELS))
    # one preprocessing fit per distinct training set (a fold holding both outliers is the same either way)
    distinct = {(k, size) for drop in (True, False) for k, size in enumerate(sizes(drop))}
    assert sorted(len(rows) for rows in clipped) == sorted(size for _, size in distinct)
    for rows in clipped:
        assert len(rows) >= 1458 or any(rows <= set(np.flatnonzero(folds != k)) for k in range(2))
    assert set(out["models"]) == set(names) and all(np.isfinite(m["cv_mean"]) for m in out["models"].values())


def test_a_house_far_outside_the_training_range_stays_within_its_neighbourhoods_prices(tmp_path):
    """A ten-times-larger copy of a real test house: linear models would extrapolate it to millions; the
    features are clipped to the training range and the stack's weights are convex, so it stays a house of
    its neighbourhood."""
    train, test = pd.read_csv("data/house-prices/train.csv"), pd.read_csv("data/house-prices/test.csv")
    mansion = test.iloc[[0]].copy()
    for column in ("LotArea", "GrLivArea", "1stFlrSF", "TotalBsmtSF", "BsmtFinSF1", "GarageArea", "WoodDeckSF"):
        mansion[column] = mansion[column] * 10
    mansion[["Id", "TotRmsAbvGrd", "OverallQual"]] = [99999, 40, 10]
    data = tmp_path / "data"
    data.mkdir()
    train.to_csv(data / "train.csv", index=False)
    pd.concat([test, mansion]).to_csv(data / "test.csv", index=False)
    out = _run(tmp_path / "out", preset="strong", fast=True, folds=2, data_dir=str(data))
    assert set(out["models"]) == {"lasso", "lgbm"}  # --fast
    price = pd.read_csv(out["files"].submission).set_index("Id").loc[99999, "SalePrice"]
    hood = train.loc[train["Neighborhood"] == mansion["Neighborhood"].item(), "SalePrice"]
    assert hood.median() < price < 2 * hood.max(), (price, hood.describe())


def test_the_guard_gives_a_row_the_model_kinds_disagree_on_the_bounded_models_price():
    from pipelines.competitions.house_prices.pipeline import GUARD_LOG_GAP, bounded_models, guard

    bounded, weights = bounded_models(["huber_lasso", "catboost"]), np.array([0.4, 0.6])
    assert bounded.tolist() == [False, True]
    # agree; extrapolated far above the trees (a huge house); just inside the gap
    preds = np.array([[12.0, 12.1], [13.5, 12.4], [12.0, 12.0 + 0.9 * GUARD_LOG_GAP]])
    stacked, moved = guard(preds, weights, bounded)
    assert moved.tolist() == [False, True, False]
    assert stacked[1] == 12.4 and stacked[[0, 2]] == pytest.approx(preds[[0, 2]] @ weights)
    # a stack of one kind has nothing to fall back on, and a bounded group without weight is averaged
    assert not guard(preds, weights, np.array([True, True]))[1].any()
    three = guard(np.array([[14.0, 12.0, 12.2]]), np.array([1.0, 0.0, 0.0]),
                  bounded_models(["lasso", "catboost", "lgbm"]))[0]
    assert three[0] == pytest.approx(12.1)


def test_the_guarded_stack_cv_is_scored_with_weights_and_guard_from_other_folds():
    from pipelines.competitions.house_prices.pipeline import fit_stack

    rng = np.random.default_rng(0)
    y = rng.normal(12, 0.4, size=200)
    folds = np.arange(200) % 5
    trees, linear = y + rng.normal(0, 0.10, 200), y + rng.normal(0, 0.08, 200)
    linear[[3, 77]] += 1.5  # two rows the linear model extrapolates on
    log_oof = np.column_stack([linear, trees])[None]
    plain, guarded = (fit_stack(log_oof, y, folds[None], bounded=b) for b in (None, np.array([False, True])))
    assert guarded["cv_mean"] < plain["cv_mean"]
    moved_folds = {3 % 5, 77 % 5}
    for k in range(5):  # folds without such a row score the same
        same = guarded["fold_scores"][k] == pytest.approx(plain["fold_scores"][k])
        assert same != (k in moved_folds)


def test_the_repeat_averaged_oof_is_each_rows_mean_of_its_cross_fitted_stack_predictions():
    from pipelines.competitions.house_prices.pipeline import fit_stack

    rng = np.random.default_rng(1)
    y = rng.normal(12, 0.4, size=300)
    log_oof = np.stack([np.column_stack([y + rng.normal(0, 0.1, 300), y + rng.normal(0.02, 0.12, 300)])
                        for _ in range(3)])  # three repeats, each with its own out-of-fold noise
    folds = np.stack([rng.permutation(300) % 5 for _ in range(3)])
    both = fit_stack(log_oof, y, folds)
    alone = [fit_stack(log_oof[r:r + 1], y, folds[r:r + 1]) for r in range(3)]
    assert all("repeat_averaged" not in a for a in alone)
    assert both["cv_pooled"] == pytest.approx(np.mean([a["cv_pooled"] for a in alone]))
    averaged = np.mean([a["log_oof"] for a in alone], axis=0)
    assert both["repeat_averaged"]["cv_pooled"] == pytest.approx(rmse(y, averaged))
    assert both["repeat_averaged"]["cv_mean"] == pytest.approx(
        np.mean([rmse(y[folds[0] == k], averaged[folds[0] == k]) for k in range(5)]))
    assert both["repeat_averaged"]["cv_pooled"] < both["cv_pooled"]  # three noisy repeats averaged


def test_mlp_trains_through_the_shared_loop_and_is_reproducible():
    from pipelines.competitions.house_prices.mlp import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = 12 + X @ np.array([0.3, -0.2, 0.1, 0.0, 0.05]) + rng.normal(scale=0.01, size=200)
    a, b = (MLPRegressor(hidden=16, epochs=150, lr=1e-2, seed=1).fit(X[:150], y[:150]) for _ in range(2))
    np.testing.assert_array_equal(a.predict(X[150:]), b.predict(X[150:]))
    assert rmse(y[150:], a.predict(X[150:])) < 0.5 * y[150:].std()


def test_huber_lasso_down_weights_gross_outliers_that_tilt_a_plain_lasso():
    from sklearn.linear_model import Lasso

    from pipelines.competitions.house_prices.estimators import HuberLasso

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    coef = np.array([0.5, -0.3, 0.2, 0.0])
    y = 12 + X @ coef + rng.normal(scale=0.05, size=300)
    bad = np.argsort(X[:, 0])[-3:]  # high-leverage rows priced far below the trend, like the two huge partial sales
    y[bad] -= 3
    robust, plain = HuberLasso(alpha=1e-4).fit(X, y), Lasso(alpha=1e-4).fit(X, y)
    assert np.abs(robust.lasso_.coef_ - coef).max() < 0.05 < np.abs(plain.coef_ - coef).max()
    assert robust.weights_[bad].max() < 0.1 and np.median(robust.weights_) == 1.0


def test_runs_ranks_an_older_run_that_left_rows_unscored_by_its_all_rows_cv(tmp_path):
    from pipelines.commands.runs import leaderboard, load_runs

    folder = tmp_path / "house-prices"
    folder.mkdir()
    old = {"competition": "house-prices", "files": {"submission": "old.csv"}, "cv_mean": 0.1069, "cv_std": 0.009,
           "cv_all_rows": 0.1250, "scored_rows": 1458, "folds": {"ids": [0] * 1460}, "created_utc": "a"}
    new = {**old, "files": {"submission": "new.csv"}, "cv_mean": 0.1187, "cv_std": 0.02, "cv_all_rows": 0.1187,
           "scored_rows": 1460, "created_utc": "b"}
    for name, record in (("old", old), ("new", new)):
        (folder / f"{name}.json").write_text(json.dumps(record))
    rows = leaderboard(load_runs(tmp_path, "house-prices"))
    assert [(r["path"].rsplit("/", 1)[-1], r["cv_mean"]) for r in rows] == [("new.csv", 0.1187), ("old.csv", 0.1250)]
    assert np.isnan(rows[1]["cv_std"])


def test_the_nested_benchmark_scores_real_submissions_on_rows_their_run_never_saw(tmp_path):
    """``benchmarks/house_nested.py`` on a quick arm: each outer fold's run writes a real submission for the
    held-out rows, and the run's own CV predicts how that submission scores there."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "house_nested.py"
    spec = importlib.util.spec_from_file_location("house_nested", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    train = pd.read_csv("data/house-prices/train.csv")
    folds = np.arange(len(train)) % 2
    out = bench.run_arm("--models ridge --folds 3 --keep-outliers", train, folds, tmp_path)
    assert len(out["fold_scores"]) == 2 and len(out["inner_cv"]) == 2
    assert out["pooled_without_outliers"] < out["pooled"] < 0.2
    assert abs(out["mean"] - np.mean(out["inner_cv"])) < 0.03


@pytest.mark.parametrize("preset", ["strong", "d2l"])
def test_only_the_d2l_preset_seeds_and_imports_torch(tmp_path, monkeypatch, preset):
    """The scikit-learn presets draw nothing from torch's generator (the MLP seeds its own), so a run never imports
    torch for its seed (about 1 s of a 15 s ``--fast`` run); d2l's linear net does draw from it."""
    import subprocess
    import sys

    from pipelines.competitions.house_prices import pipeline

    asked = []

    def record(seed, **kw):
        asked.append(kw.get("torch_rng", True))
        raise KeyboardInterrupt  # stop the run here: only the call is under test

    monkeypatch.setattr(pipeline, "set_seed", record)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, preset=preset)
    assert asked == [preset == "d2l"]
    if preset == "strong":  # and seeding without torch's generator leaves torch unimported
        code = ("import sys; from pipelines.core.seed import set_seed; set_seed(0, torch_rng=False); "
                "print('torch' in sys.modules)")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert run.stdout == "False\n"
