"""blend: two real house-prices runs on the same folds, and the refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.__main__ import main
from pipelines.commands.blend import nested_cross_fitted_scores
from pipelines.competitions.house_prices.pipeline import HousePricesConfig, run_pipeline
from pipelines.core.blending import cross_fitted_scores


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two quick strong runs on the same 3 folds: one model, and two (its own blend is cross-fitted too)."""
    out = tmp_path_factory.mktemp("blend")
    runs = [run_pipeline(HousePricesConfig(out_dir=str(out), progress=False, folds=3, models=m))
            for m in (["lasso"], ["lgbm", "ridge"])]
    return out, [r["files"] for r in runs]


def test_blend_is_no_worse_than_the_better_input(two_runs, capsys):
    out, files = two_runs
    assert main(["blend", str(files[0].record), str(files[1].submission), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    blend_csv = Path(printed.strip().splitlines()[-1].removeprefix("submission: "))
    record = json.loads(blend_csv.with_suffix(".json").read_text())
    inputs = {i["run"]: i for i in record["inputs"]}
    best = min(i["cv_mean"] for i in inputs.values())
    assert record["preset"] == "blend" and record["cv_mean"] <= best
    assert abs(sum(record["blend_weights"].values()) - 1) < 1e-9 and min(record["blend_weights"].values()) >= 0
    for f in files:  # rescored on the same rows the strong runs scored: log(price) vs their log1p(price)
        recorded = json.loads(f.record.read_text())
        assert inputs[f.record.stem]["cv_mean"] == pytest.approx(recorded["cv_mean"], abs=1e-5)
    assert record["folds"] == json.loads(files[0].record.read_text())["folds"]
    sub = pd.read_csv(blend_csv)
    assert list(sub.columns) == ["Id", "SalePrice"] and (sub["SalePrice"] > 0).all()
    assert "blend (cross-fitted)" in printed


def test_blend_refuses_different_folds(two_runs, tmp_path, capsys):
    out, files = two_runs
    other = run_pipeline(HousePricesConfig(out_dir=str(tmp_path), progress=False, folds=3, seed=1,
                                           models=["lasso"]))["files"]
    assert main(["blend", str(files[0].record), str(other.record)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fold ids differ") and err.count("\n") == 1


def test_blend_refuses_one_run_mixed_competitions_and_repeats(two_runs, tmp_path, capsys):
    out, files = two_runs
    assert main(["blend", str(files[0].record)]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["blend", str(files[0].record), str(files[0].oof)]) == 2
    assert "given twice" in capsys.readouterr().err
    leaves = tmp_path / "classify-leaves"
    leaves.mkdir()
    record = json.loads(files[1].record.read_text())
    record["competition"] = "classify-leaves"
    (leaves / "x.json").write_text(json.dumps(record))
    assert main(["blend", str(files[0].record), str(leaves / "x.json")]) == 2
    assert "different competitions" in capsys.readouterr().err


def test_blend_refuses_missing_oof(two_runs, tmp_path, capsys):
    out, files = two_runs
    copy = tmp_path / "house-prices"
    copy.mkdir()
    for f in (files[1].record, files[1].submission):
        shutil.copy(f, copy / f.name)
    assert main(["blend", str(files[0].record), str(copy / files[1].record.name)]) == 2
    assert "out-of-fold file missing" in capsys.readouterr().err


def test_nested_cross_fitting_matches_the_shared_one_for_single_model_runs():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    folds = np.arange(300) % 3
    mask = np.ones(300, bool)
    mask[:5] = False
    a, b = y + rng.normal(0, 0.3, 300), y + rng.normal(0, 0.5, 300)
    nested = nested_cross_fitted_scores([a[:, None], b[:, None]], y, folds, mask)
    assert nested == pytest.approx(cross_fitted_scores(np.column_stack([a, b]), y, folds, mask=mask))
    # a run that blended two models itself: its inner weights are refitted per fold too
    c = y + rng.normal(0, 0.4, 300)
    nested = nested_cross_fitted_scores([np.column_stack([a, c]), b[:, None]], y, folds, mask)
    assert len(nested) == 3 and max(nested) < 0.3
