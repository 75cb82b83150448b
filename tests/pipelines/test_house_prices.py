"""House Prices end to end: both presets, the same folds, reproducibility and no leakage."""

import json

import numpy as np
import pandas as pd
import pytest

from features.house import HouseImputer
from pipelines.house_prices import HousePricesConfig, outlier_mask, run_pipeline


def _run(tmp_path, **kw):
    cfg = HousePricesConfig(out_dir=str(tmp_path), progress=False, **kw)
    return run_pipeline(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {"d2l": _run(out, preset="d2l"), "strong": _run(out, preset="strong"), "out": out}


def test_d2l_preset_reproduces_the_book(runs):
    d2l = runs["d2l"]
    assert 0.16 <= d2l["cv_mean"] <= 0.18, d2l["cv_mean"]


def test_strong_preset_beats_d2l_on_the_same_folds(runs):
    d2l, strong = (json.loads(runs[p]["files"].record.read_text()) for p in ("d2l", "strong"))
    assert d2l["folds"]["ids"] == strong["folds"]["ids"]
    assert all(s < d for s, d in zip(strong["fold_scores"], d2l["fold_scores"], strict=True))
    assert strong["cv_mean"] <= 0.135  # every row scored, the two outliers too
    assert strong["cv_excluding_outliers"] < strong["cv_mean"]  # the comparison figure leaves them out
    assert strong["cv_mean"] < d2l["cv_mean"]
    assert abs(sum(strong["blend_weights"].values()) - 1) < 1e-9
    assert min(strong["blend_weights"].values()) >= 0


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
    assert record["outliers"]["ids"] == [524, 1299] and record["outliers"]["excluded_from_fit"] is False
    assert record["seed"] == 0 and len(record["folds"]["ids"]) == 1460 and record["config"]["preset"] == "strong"
    assert files.figures["cv"].stat().st_size > 10_000


def test_same_seed_gives_byte_identical_submissions(tmp_path):
    a = _run(tmp_path / "a", preset="strong", models=["lasso", "lgbm"])
    b = _run(tmp_path / "b", preset="strong", models=["lasso", "lgbm"])
    assert a["files"].submission.read_bytes() == b["files"].submission.read_bytes()
    assert a["files"].oof.read_bytes() == b["files"].oof.read_bytes()
    c = _run(tmp_path / "c", preset="d2l")
    d = _run(tmp_path / "d", preset="d2l")
    assert c["files"].submission.read_bytes() == d["files"].submission.read_bytes()
    e = _run(tmp_path / "e", preset="d2l", seed=1)
    assert e["files"].submission.read_bytes() != c["files"].submission.read_bytes()


@pytest.mark.parametrize("drop", [False, True])
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
    assert outliers.sum() == 2 and record["outliers"]["excluded_from_fit"] is drop
    assert len(fitted_on) == 4  # three folds + the refit on all rows
    for k, rows in enumerate(fitted_on[:3]):
        assert not rows & set(np.flatnonzero(folds == k))
        assert len(rows) == ((folds != k) & ~(outliers & drop)).sum()  # --drop-outliers: left out of fitting
    assert len(fitted_on[3]) == 1460 - 2 * drop
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
