"""House Prices ``--preset best`` and ``--time-limit``: the model list, the budget that drops what would overrun,
and a valid run from what was fitted."""

import json

import pandas as pd
import pytest

from pipelines.__main__ import main as cli
from pipelines.competitions.house_prices.estimators import BEST_MODELS, DEFAULT_MODELS
from pipelines.competitions.house_prices.pipeline import HousePricesConfig, preset_models, run_pipeline
from pipelines.core import budget as budget_module
from pipelines.core.budget import OverBudget, TimeBudget
from pipelines.core.errors import PipelineError


def test_best_builds_its_own_model_list_and_models_still_win():
    assert preset_models(HousePricesConfig(preset="best")) == list(BEST_MODELS)
    assert set(DEFAULT_MODELS) <= set(BEST_MODELS)  # best keeps the default's models
    assert preset_models(HousePricesConfig(preset="best", models=["ridge", "lasso"])) == ["ridge", "lasso"]
    assert preset_models(HousePricesConfig(preset="strong")) == list(DEFAULT_MODELS)


def test_fast_does_not_go_with_best(tmp_path):
    with pytest.raises(PipelineError, match="--fast is the strong preset's"):
        run_pipeline(HousePricesConfig(preset="best", fast=True, out_dir=str(tmp_path), progress=False))
    assert not any(tmp_path.iterdir())  # refused before any work


def test_the_budget_drops_a_model_whose_projection_overruns_and_never_the_first(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(10.0)  # deadline at 110
    clock[0] = 104.0
    budget.check("first", 1, 6, 100.0, first=True)  # 4 s a fit, 20 s more: the first model is always fitted
    assert budget.admit("second", first=False)
    clock[0] = 105.0
    budget.check("second", 1, 6, 104.0, first=False)  # 1 s a fit, 5 s more, 5 s left: fits
    clock[0] = 106.5
    with pytest.raises(OverBudget):
        budget.check("second", 2, 6, 104.0, first=False)  # 1.25 s a fit, 5 s more, 3.5 s left
    assert "stopped after 2 of 6 fits" in budget.skipped["second"]
    clock[0] = 111.0
    assert not budget.admit("third", first=False) and "not started" in budget.skipped["third"]
    assert budget.admit("only", first=True)
    assert TimeBudget(None).left() == float("inf")


def test_time_limit_keeps_the_first_model_names_the_skipped_and_writes_a_valid_run(tmp_path, capsys):
    code = cli(["house-prices", "--preset", "best", "--folds", "2", "--time-limit", "0.01", "--no-progress",
                "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    skipped = BEST_MODELS[1:]
    assert f"time limit 0.01 s: skipped {skipped[0]} (not started" in out
    submission = tmp_path / "house-prices" / out.splitlines()[-1].rsplit("/", 1)[-1]
    record = json.loads(submission.with_suffix(".json").read_text())
    assert record["preset"] == "best" and list(record["models"]) == [BEST_MODELS[0]]
    assert record["time_limit"] == {"seconds": 0.01, "fitted": [BEST_MODELS[0]],
                                    "skipped": {n: "not started: the 0.01 s limit was spent" for n in skipped}}
    sub = pd.read_csv(submission)
    assert len(sub) == 1459 and (sub["SalePrice"] > 10_000).all()


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_time_limit_that_is_not_a_positive_number_is_one_line(value, tmp_path, capsys):
    assert cli(["house-prices", "--time-limit", value, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--time-limit: must be a positive number of seconds" in err
    assert not any(tmp_path.iterdir())


def test_best_keeps_within_its_own_time_limit_unless_told_otherwise():
    from pipelines.competitions.house_prices.pipeline import BEST_TIME_LIMIT, time_limit

    assert time_limit(HousePricesConfig(preset="best")) == BEST_TIME_LIMIT <= 900
    assert time_limit(HousePricesConfig(preset="best", time_limit=60)) == 60
    assert time_limit(HousePricesConfig(preset="strong")) is None


@pytest.mark.parametrize("missing", ["xgboost", "pytabkit", "tabpfn", "weights"])
def test_an_optional_model_that_cannot_load_is_refused_before_any_fit(missing, tmp_path, monkeypatch):
    """XGBoost, pytabkit (RealMLP, TabM) and TabPFN are optional; TabPFN takes local weights only
    (``TABPFN_MODEL_PATH``), never a download.
    Any of them missing stops the run before its first model is fitted, not after the models listed before it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else object() if name == "tabpfn" else real(name, *a))
    monkeypatch.setenv("TABPFN_MODEL_PATH", str(tmp_path / "no-such.ckpt"))
    model = {"xgboost": "xgb", "pytabkit": "realmlp"}.get(missing, "tabpfn")
    message = {"xgboost": "pip install xgboost-cpu", "pytabkit": "pip install pytabkit", "tabpfn": "pip install tabpfn",
               "weights": "set TABPFN_MODEL_PATH to the .ckpt file"}[missing]
    with pytest.raises(PipelineError, match=message):
        run_pipeline(HousePricesConfig(models=["ridge", model], out_dir=str(tmp_path / "out"), progress=False))
    assert not (tmp_path / "out").exists()
