"""runs: the leaderboard lists what the pipelines wrote, best CV first, as a table and as CSV."""

import csv
import json

import pytest

from pipelines.__main__ import main
from pipelines.commands.submit import append_submission
from pipelines.competitions.house_prices.pipeline import HousePricesConfig, run_pipeline


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for model in ("lasso", "ridge"):
        run_pipeline(HousePricesConfig(out_dir=str(out), progress=False, folds=3, models=[model]))
    return out


def test_runs_lists_every_pipeline_run_sorted_by_cv(out, capsys):
    records = sorted(out.glob("house-prices/*.json"))
    assert len(records) == 2
    first = json.loads(records[0].read_text())
    append_submission(records[0], {"time_utc": "2026-01-01T00:00:00+00:00", "message": "m", "sha256": "0" * 64,
                                   "kaggle_ref": 1, "public_score": 0.12345})
    assert main(["runs", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "house-prices: 2 runs" in printed and "lasso" in printed and "ridge" in printed
    rows = list(csv.DictReader((out / "house-prices" / "runs.csv").read_text().splitlines()))
    assert len(rows) == 2
    cvs = [float(r["cv_mean"]) for r in rows]
    assert cvs == sorted(cvs)
    assert {r["models"] for r in rows} == {"lasso", "ridge"}
    submitted = next(r for r in rows if r["path"].endswith(first["files"]["submission"]))
    assert submitted["submitted"] == "1" and submitted["public_score"] == "0.12345"
    assert all(float(r["wall_s"]) > 0 and r["time"] for r in rows)


def test_runs_csv_to_stdout_and_a_missing_competition(out, tmp_path, capsys):
    assert main(["runs", "--out-dir", str(out), "--competition", "house-prices", "--csv", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("time,preset,models,cv_mean") and len(lines) == 3
    assert main(["runs", "--out-dir", str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err
