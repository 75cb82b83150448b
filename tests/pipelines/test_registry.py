"""The competition registry: a third competition is one folder, and every generic command then works on it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipelines.competitions as registry
from pipelines.__main__ import build_parser, commands, main
from pipelines.core.errors import PipelineError
from pipelines.core.records import RECORD_VERSION, RunRecord, upgrade

TOY = Path(__file__).parent / "toy_competition"


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy competition's folder, copied beside the real ones (on the registry's path), with its data."""
    root = tmp_path / "more_competitions"
    package = root / "toy_competition"
    shutil.copytree(TOY, package, ignore=shutil.ignore_patterns("__pycache__"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    frame = pd.DataFrame({"Id": range(1, 81), "x1": x[:, 0], "x2": x[:, 1]})
    (package / "data").mkdir()
    frame.iloc[:60].assign(y=3 * x[:60, 0] - 2 * x[:60, 1] + rng.normal(0, 0.5, 60)).to_csv(
        package / "data" / "train.csv", index=False)
    frame.iloc[60:].to_csv(package / "data" / "test.csv", index=False)
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(root)])
    yield package
    for name in [m for m in sys.modules if m.startswith("pipelines.competitions.toy_competition")]:
        del sys.modules[name]


def test_the_registry_holds_the_shipped_competitions():
    names = {c.name: c for c in registry.list_competitions()}
    assert set(names) == {"house-prices", "classify-leaves"}
    assert registry.get_competition("leaves") is names["classify-leaves"]
    assert registry.get_competition("house-prices-advanced-regression-techniques") is names["house-prices"]
    assert names["house-prices"].direction == "minimize" and names["classify-leaves"].direction == "maximize"
    assert names["house-prices"].blend.kind == "regression" and names["classify-leaves"].blend.kind == "probabilities"
    with pytest.raises(PipelineError, match="unknown competition 'nope'; known: "):
        registry.get_competition("nope")


def test_a_toy_competition_gets_cv_tuning_blending_runs_and_submit_from_one_folder(toy, tmp_path, capsys):
    out, runs_dir = tmp_path / "subs", tmp_path / "runs"
    common = ["--out-dir", str(out)]
    assert registry.get_competition("toy").name == "toy-regression"

    # CV: the competition's own command, from the registry's CLI table
    assert main(["toy", "--alpha", "0.1", *common]) == 0
    assert main(["toy", "--alpha", "30", *common]) == 0
    records = sorted((out / "toy-regression").glob("*.json"))
    assert len(records) == 2
    first = RunRecord.read(records[0])
    assert first.version == RECORD_VERSION and first.competition == "toy-regression" and first.metric == "rmse"
    assert len(first.fold_ids) == 60 and len(first.fold_scores) == 3 and first.timings["total_s"] > 0

    # the other competitions' tune flags are theirs alone: the toy's tune parser has none of them
    args = build_parser(["tune", "toy"]).parse_args(["tune", "toy"])
    assert not {"models", "epochs", "set"} & set(vars(args)) and args.competition_args == []
    assert main(["tune", "toy", "--set", "alpha=1", "--runs-dir", str(runs_dir)]) == 2
    assert "unrecognized arguments: --set alpha=1 (--set is for tune leaves)" in capsys.readouterr().err

    # tuning: the generic tune command with the competition's objective; --best writes a run
    assert main(["tune", "toy", "--trials", "2", "--runs-dir", str(runs_dir), "--no-plots", "--quiet", "--best",
                 *common]) == 0
    tuned = [RunRecord.read(p) for p in (out / "toy-regression").glob("*.json")]
    assert sum("study" in r.extra for r in tuned) == 1

    # blending: two runs on the same folds, in the competition's space (identity here)
    capsys.readouterr()
    assert main(["blend", records[0].stem, records[1].stem, *common]) == 0
    blend = [r for r in (RunRecord.read(p) for p in (out / "toy-regression").glob("*.json")) if r.preset == "blend"]
    assert len(blend) == 1 and blend[0].fold_ids == first.fold_ids
    assert blend[0].kaggle_competition == "toy-regression-kaggle"
    assert sum(blend[0].extra["blend_weights"].values()) == pytest.approx(1.0)

    # runs: the leaderboard, lowest RMSE first
    capsys.readouterr()
    assert main(["runs", "--competition", "toy", *common]) == 0
    table = capsys.readouterr().out
    assert "toy-regression: 4 runs, best lowest rmse first" in table
    rows = pd.read_csv(out / "toy-regression" / "runs.csv")
    assert rows["cv_mean"].is_monotonic_increasing

    # submit: validated against the toy's own test ids; nothing is sent
    submission = out / "toy-regression" / json.loads(records[0].read_text())["files"]["submission"]
    capsys.readouterr()
    assert main(["submit", str(submission), "--dry-run", *common]) == 0
    printed = capsys.readouterr().out
    assert f"valid: {submission} (20 rows) for toy-regression-kaggle" in printed and "nothing sent" in printed

def test_older_records_are_upgraded_in_one_place():
    leaves_v1 = {"competition": "classify-leaves", "preset": "m", "cv": 0.9, "folds": [0, 1, 0],
                 "timings": {"total_s": 3.0}, "data": {"dir": "/d"}, "files": {"submission": "a.csv"}}
    house_v1 = {"competition": "house-prices", "preset": "strong", "cv": 0.12, "cv_mean": 0.125, "metric": "log_rmse",
                "folds": {"ids": [1, 0], "strategy": "binned"}, "timings": {"total_seconds": 2.0},
                "config": {"data_dir": "/h"}, "files": {"submission": "b.csv"}}
    leaves, house = RunRecord.from_dict(leaves_v1), RunRecord.from_dict(house_v1)
    assert (leaves.cv_mean, leaves.fold_ids, leaves.timings["total_s"], leaves.data_dir) == (0.9, [0, 1, 0], 3.0, "/d")
    assert (house.cv_mean, house.fold_ids, house.timings["total_s"], house.data_dir) == (0.125, [1, 0], 2.0, "/h")
    assert house.folds["strategy"] == "binned" and "cv" not in house.to_dict()
    assert upgrade(house.to_dict()) == house.to_dict()  # the current version passes through unchanged
    # a version-1 record that named no metric gets its competition's, where the record says which it is
    assert leaves.metric == registry.get_competition("classify-leaves").metric == "accuracy"
    unnamed_house = {k: v for k, v in house_v1.items() if k != "metric"}
    assert RunRecord.from_dict(unnamed_house).metric == registry.get_competition("house-prices").metric
    assert upgrade({**unnamed_house, "competition": "elsewhere"})["metric"] == "cv"  # unknown: no guess
    with pytest.raises(ValueError, match="newer"):
        upgrade({**house.to_dict(), "version": RECORD_VERSION + 1})


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_command_prints_its_help(command, capsys):
    """``--help`` renders every flag's text (argparse %-formats it: a stray '%' in a help string breaks it)."""
    with pytest.raises(SystemExit) as done:
        build_parser([command]).parse_args([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m pipelines {command}")
