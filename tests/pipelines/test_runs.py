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


def _record(folder, stem: str, cv, **extra) -> None:
    """A hand-made house-prices run: its record and (unless told otherwise) its submission CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({
        "competition": "house-prices", "preset": "strong", "metric": "log_rmse", "cv_mean": cv, "version": 2,
        "created_utc": f"2026-01-01T00:00:0{stem[-1]}+00:00", "files": {"submission": f"{stem}.csv"}, **extra}))
    (folder / f"{stem}.csv").write_text("Id,SalePrice\n1,1.0\n")


def test_bad_records_are_named_in_one_warning_and_the_good_ones_listed(tmp_path, capsys):
    folder = tmp_path / "house-prices"
    _record(folder, "good1", 0.12)
    _record(folder, "good2", 0.11)
    _record(folder, "text3", "0.1 (rounded)")
    _record(folder, "null4", None)
    _record(folder, "folds5", 0.1, timings={"total_s": "fast"})
    (folder / "trunc6.json").write_text('{"competition": "house-prices", "cv_mea')
    (folder / "other.json").write_text('{"not": "a run"}')  # not a record at all: ignored, not warned about
    assert main(["runs", "--out-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "house-prices: 2 runs" in out and "good1.csv" in out and "good2.csv" in out
    assert err.count("\n") == 1 and err.startswith("warning: skipped 4 bad run records:")
    for name, why in [("text3", "cv_mean is text '0.1 (rounded)', not a number"), ("null4", "cv_mean is null"),
                      ("folds5", "timings.total_s is text 'fast'"), ("trunc6", "unreadable JSON")]:
        assert f"{folder / name}.json (" in err and why in err
    assert "other.json" not in err
    rows = list(csv.DictReader((folder / "runs.csv").read_text().splitlines()))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["good2.csv", "good1.csv"]


def test_a_run_whose_submission_is_gone_is_marked_incomplete_and_ranked_last(tmp_path, capsys):
    folder = tmp_path / "house-prices"
    _record(folder, "best1", 0.09)
    _record(folder, "next2", 0.12)
    (folder / "best1.csv").unlink()
    assert main(["runs", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs (1 incomplete, ranked last)" in out and "[incomplete, missing: submission]" in out
    assert out.index("next2.csv") < out.index("best1.csv")
    rows = list(csv.DictReader((folder / "runs.csv").read_text().splitlines()))
    assert [(r["path"].rsplit("/", 1)[-1], r["missing"]) for r in rows] == [("next2.csv", ""),
                                                                           ("best1.csv", "submission")]


def test_an_unwritable_csv_copy_still_prints_the_table_and_warns_once(tmp_path, capsys):
    """The default CSV copy cannot be written (a folder stands in its place: as root, a read-only mode would not
    stop the write): the table is printed and one warning says so, without blaming a --csv nobody gave."""
    folder = tmp_path / "house-prices"
    _record(folder, "only1", 0.12)
    (folder / "runs.csv").mkdir()
    assert main(["runs", "--out-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "house-prices: 1 runs" in out and "only1.csv" in out and "csv:" not in out
    assert err.count("\n") == 1 and err.startswith("warning: the leaderboard above is complete, but its CSV copy")
    assert str(folder / "runs.csv") in err and "--csv " not in err.split(";")[0]
