"""The issue-12 probes: every failure is one line (a log file keeps the traceback), output folders are checked
before any work, bad input is named, a tuning study survives typos and Ctrl-C, nothing partial is written."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest

from pipelines.__main__ import main

HP = ["house-prices", "--models", "lasso", "--folds", "2", "--no-progress"]


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PIPELINES_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def one_line(err: str) -> str:
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def work_must_not_start(*_, **__):
    raise AssertionError("the work started before the output folder was checked")


# ------------------------------------------------------------------------------ one line for any failure
def test_unexpected_error_is_one_line_naming_the_log_that_keeps_the_traceback(log_dir, monkeypatch, capsys):
    import pipelines.commands.runs

    monkeypatch.setattr(pipelines.commands.runs, "run", lambda args: {}["no such key"])
    assert main(["runs"]) == 1
    captured = capsys.readouterr()
    err = one_line(captured.err)
    (log,) = log_dir.iterdir()
    assert err.startswith("error: KeyError: 'no such key'") and str(log) in err
    assert "Traceback" in log.read_text() and "Traceback" not in captured.err + captured.out


def test_a_failing_tune_trial_is_one_line_and_optunas_traceback_goes_to_the_log(tmp_path, log_dir, monkeypatch,
                                                                                 capfd):
    from pipelines.competitions.house_prices import objective

    def broken(self, trial):
        raise ValueError("broken objective")

    monkeypatch.setattr(objective.HousePricesObjective, "__call__", broken)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["tune", "house-prices", "--trials", "1", "--storage", url, "--models", "lasso", "--folds", "2",
                 "--no-plots", "--quiet"]) == 1
    captured = capfd.readouterr()
    assert one_line(captured.err).startswith("error: ValueError: broken objective")
    assert "Traceback" not in captured.err + captured.out and "Trial 0 failed" not in captured.err
    (log,) = log_dir.iterdir()
    assert "Trial 0 failed" in log.read_text() and "Traceback" in log.read_text()


# ---------------------------------------------------------------------- output folders, before any work
@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("below", ["", "sub"])
def test_house_prices_checks_out_dir_before_the_cv(a_file, below, monkeypatch, capsys):
    import pipelines.competitions.house_prices.pipeline

    monkeypatch.setattr(pipelines.competitions.house_prices.pipeline, "load", work_must_not_start)
    assert main([*HP, "--out-dir", str(a_file / below)]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)


def test_leaves_checks_settings_and_folders_before_training_and_makes_no_run_folder(tmp_path, a_file, monkeypatch,
                                                                                   capsys):
    import pipelines.competitions.leaves.data

    monkeypatch.setattr(pipelines.competitions.leaves.data, "load_data", work_must_not_start)  # where it is used
    base = ["leaves", "--data-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    cases = {
        ("--out-dir", str(a_file)): "is a file, not a folder",
        ("--runs-dir", str(a_file / "runs")): "--runs-dir",
        ("--epochs", "0"): "--epochs must be at least 1",
        ("--img-size", "0"): "--img-size must be at least 16",
        ("--model", "resnet_typo"): "unknown model 'resnet_typo'",
        ("--folds", "1"): "--folds must be at least 2",
    }
    for extra, message in cases.items():
        assert main([*base, "--out-dir", str(tmp_path / "subs"), *extra]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "subs").exists()


def test_runs_csv_into_a_missing_folder_is_made_and_under_a_file_is_refused(tmp_path, a_file, capsys):
    from pipelines.competitions.house_prices.pipeline import HousePricesConfig, run_pipeline

    out = tmp_path / "subs"
    run_pipeline(HousePricesConfig(out_dir=str(out), folds=2, models=["lasso"], progress=False))
    target = tmp_path / "new" / "deeper" / "runs.csv"
    assert main(["runs", "--out-dir", str(out), "--csv", str(target)]) == 0
    assert len(pd.read_csv(target)) == 1
    capsys.readouterr()
    assert main(["runs", "--out-dir", str(out), "--csv", str(a_file / "runs.csv")]) == 2
    assert "--csv" in one_line(capsys.readouterr().err)
    assert main(["runs", "--out-dir", str(out), "--csv", str(tmp_path)]) == 2
    assert "is a folder" in one_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def two_test_sets(tmp_path_factory):
    """Two lasso runs on the same training rows and folds, one on a test set with one value changed."""
    from pipelines.competitions.house_prices.pipeline import DEFAULT_DIR, HousePricesConfig, run_pipeline

    root = tmp_path_factory.mktemp("two-test-sets")
    other = Path(shutil.copytree(DEFAULT_DIR, root / "other-data"))
    test = pd.read_csv(other / "test.csv")
    test.loc[0, "LotArea"] = test.loc[0, "LotArea"] * 2
    test.to_csv(other / "test.csv", index=False)
    runs = [run_pipeline(HousePricesConfig(out_dir=str(root / "subs"), folds=2, models=["lasso"], progress=False,
                                           data_dir=d))["files"] for d in (None, str(other))]
    return root, runs


def test_blend_refuses_runs_made_on_different_test_sets(two_test_sets, capsys):
    root, (a, b) = two_test_sets
    assert main(["blend", str(a.record), str(b.record), "--out-dir", str(root / "subs")]) == 2
    assert "different test sets" in one_line(capsys.readouterr().err)


def test_blend_checks_out_dir_before_blending(two_test_sets, a_file, monkeypatch, capsys):
    import pipelines.commands.blend

    root, (a, _) = two_test_sets
    from pipelines.competitions.house_prices.pipeline import (  # a second run on the same test set
        HousePricesConfig,
        run_pipeline,
    )

    b = run_pipeline(HousePricesConfig(out_dir=str(root / "subs2"), folds=2, models=["lasso"], progress=False,
                                       seed=0))["files"]
    monkeypatch.setattr(pipelines.commands.blend, "blend_regression", work_must_not_start)
    assert main(["blend", str(a.record), str(b.record), "--out-dir", str(a_file)]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)


def test_submit_mistyped_path_says_no_such_file(tmp_path, capsys):
    assert main(["submit", str(tmp_path / "typo.csv"), "--dry-run"]) == 2
    assert one_line(capsys.readouterr().err) == f"error: {tmp_path / 'typo.csv'}: no such file"


# -------------------------------------------------------------------------------------------- bad input
def _write_train(folder: Path, edit) -> None:
    path = folder / "train.csv"
    frame = pd.read_csv(path)
    edit(frame).to_csv(path, index=False)


def test_duplicate_column_name_is_refused_from_the_raw_header(house_copy, tmp_path, capsys):
    path = house_copy / "train.csv"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace(",Street,", ",LotFrontage,", 1)  # pandas would read it as 'LotFrontage.1'
    path.write_text("\n".join(lines) + "\n")
    assert main([*HP, "--data-dir", str(house_copy), "--out-dir", str(tmp_path / "out")]) == 2
    err = one_line(capsys.readouterr().err)
    assert "column 'LotFrontage' appears twice in the header" in err and "train.csv" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, message", [(1e308, "absurd value"), (float("inf"), "infinite value"),
                                            (-1e300, "absurd value")])
def test_non_finite_or_absurd_feature_is_named_with_column_and_line(house_copy, tmp_path, capsys, value, message):
    def edit(frame):
        frame["LotArea"] = frame["LotArea"].astype(float)
        frame.loc[3, "LotArea"] = value
        return frame

    _write_train(house_copy, edit)
    assert main(["house-prices", "--folds", "2", "--no-progress", "--data-dir", str(house_copy),
                 "--out-dir", str(tmp_path / "out")]) == 2
    err = one_line(capsys.readouterr().err)
    assert message in err and "'LotArea'" in err and "line 5" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows, folds, needed", [(5, "5", 10), (1460, "2000", 4000)])
def test_too_few_rows_for_the_folds_says_how_many_are_needed(house_copy, tmp_path, capsys, rows, folds, needed):
    _write_train(house_copy, lambda f: f.head(rows))
    assert main(["house-prices", "--models", "lasso", "--folds", folds, "--no-progress", "--data-dir",
                 str(house_copy), "--out-dir", str(tmp_path / "out")]) == 2
    assert f"needs at least {needed}" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_nan_cv_is_one_line_and_writes_no_file(house_copy, tmp_path, capsys):
    """The issue's 12-row train.csv where 10 rows are of the outlier type: one line, no (0-byte) record."""
    train = pd.read_csv(house_copy / "train.csv")
    outlier = (train["GrLivArea"] > 4000) & (train["SalePrice"] < 300_000)
    rows = pd.concat([pd.concat([train[outlier]] * 5).head(10), train[~outlier].head(2)])
    rows.assign(Id=range(1, 13)).to_csv(house_copy / "train.csv", index=False)
    for extra in ([], ["--drop-outliers"]):
        code = main([*HP, "--data-dir", str(house_copy), "--out-dir", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        if code:
            one_line(err.splitlines()[-1])
            assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.*"))
        else:  # a finite result is fine too, as long as it is a whole run
            (record,) = (tmp_path / "out" / "house-prices").glob("*.json")
            assert json.loads(record.read_text())["files"]["submission"]


# ------------------------------------------------------------------------------------------------ tune
def _tune(*extra: str) -> list[str]:
    return ["tune", "house-prices", "--trials", "1", "--models", "lasso", "--folds", "2", "--no-plots", "--quiet",
            *extra]


def test_a_typo_in_data_dir_leaves_no_study_and_paths_are_normalised(house_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = ["--runs-dir", "runs"]
    assert main(_tune("--data-dir", "hous", *runs)) == 2
    assert "no such folder" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs" / "tune").exists()  # the default study was not made
    assert main(_tune("--data-dir", "house", *runs)) == 0
    # the same folder with a trailing slash, or absolute, is the same study
    assert main([*_tune("--data-dir", "house/", *runs)[:3], "2", *_tune("--data-dir", "house/", *runs)[4:]]) == 0
    assert main([*_tune("--data-dir", str(house_copy), *runs)[:3], "3",
                 *_tune("--data-dir", str(house_copy), *runs)[4:]]) == 0
    study = optuna.load_study(study_name="house-prices", storage=f"sqlite:///{tmp_path / 'runs/tune/house-prices.db'}")
    assert len(study.trials) == 3


def test_after_ctrl_c_in_trial_0_resume_reruns_the_presets_defaults(tmp_path, monkeypatch, capsys):
    from pipelines.competitions.house_prices import objective

    real = objective.HousePricesObjective.__call__

    def interrupted(self, trial):
        raise KeyboardInterrupt

    url = f"sqlite:///{tmp_path / 's.db'}"
    monkeypatch.setattr(objective.HousePricesObjective, "__call__", interrupted)
    assert main(_tune("--storage", url)) == 130
    study = optuna.load_study(study_name="house-prices", storage=url)
    (trial0,) = study.trials
    assert trial0.state == optuna.trial.TrialState.FAIL and trial0.user_attrs["preset_defaults"]

    monkeypatch.setattr(objective.HousePricesObjective, "__call__", real)
    assert main(_tune("--storage", url)) == 0
    assert "queued them again" in capsys.readouterr().out
    study = optuna.load_study(study_name="house-prices", storage=url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    defaults = trial0.system_attrs["fixed_params"]  # what enqueue_trial queued for trial 0
    assert defaults == {"lasso.alpha": 0.0005}
    assert len(done) == 1 and done[0].user_attrs["preset_defaults"] and done[0].params == defaults


@pytest.mark.parametrize("argv, message", [
    (["tune", "house-prices", "--folds", "0"], "--folds: must be at least 2, got 0"),
    (["tune", "leaves", "--epochs", "0"], "--epochs must be at least 1"),
    (["tune", "leaves", "--set", "img_size=0"], "--img-size must be at least 16"),
])
def test_tune_refuses_zero_settings_before_a_study_exists(argv, message, tmp_path, capsys):
    assert main([*argv, "--runs-dir", str(tmp_path / "runs"), "--no-plots"]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------- numeric flags, in the parser
def cli_error(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and the one ``error:`` line of a refused command line: argparse's (its usage block, then
    one line, ``SystemExit``) or the CLI's own (a ``PipelineError``)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return code, errors[0]


@pytest.mark.parametrize("argv, words", [
    (["house-prices", "--seed", "-1"], ["argument --seed: must be an integer in 0..4294967295, got -1"]),
    (["house-prices", "--seed", "4294967296"], ["--seed: must be an integer in 0..4294967295, got 4294967296"]),
    (["leaves", "--seed", "4294967296"], ["--seed: must be an integer in 0..4294967295, got 4294967296"]),
    (["leaves", "--lr", "nan"], ["--lr", "nan"]),  # whatever its parser's type: at worst the CLI's backstop
    (["leaves", "--mixup", "inf"], ["--mixup", "inf"]),
    (["tune", "--timeout", "nan", "house-prices"], ["argument --timeout: must be a finite number, got 'nan'"]),
    (["tune", "--workers", "0", "house-prices"], ["argument --workers: must be at least 1, got 0"]),
    (["tune", "house-prices", "--seed", "-1"], ["tune house-prices: argument --seed: must be an integer in"]),
    (["tune", "house-prices", "--trials", "1.5"], ["argument --trials: expected an integer, got '1.5'"]),
    (["tune", "house-prices", "--timeout", "-3"], ["argument --timeout: must be above 0, got -3"]),
    (["tune", "leaves", "--set", "lr=nan"], ["--set 'lr=nan': 'nan' is not a valid finite number"]),
])
def test_a_numeric_flag_out_of_its_range_is_one_line_before_any_work_or_folder(argv, words, tmp_path, monkeypatch,
                                                                               capsys):
    import pipelines.competitions.leaves.data

    monkeypatch.setattr(pipelines.competitions.leaves.data, "load_data", work_must_not_start)  # where it is used
    folders = ["--out-dir", str(tmp_path / "subs")]
    if argv[0] != "house-prices":  # the only command here without a --runs-dir
        folders += ["--runs-dir", str(tmp_path / "runs")]
    code, error = cli_error([*argv, *folders], capsys)
    assert code == 2 and all(w in error for w in words), error
    assert not (tmp_path / "runs").exists() and not (tmp_path / "subs").exists()


def test_the_cli_refuses_nan_or_inf_in_any_float_flag_whatever_its_type():
    from pipelines.__main__ import check_finite_flags
    from pipelines.core.errors import PipelineError

    check_finite_flags(argparse.Namespace(lr=0.1, epochs=3, name="nan"))
    for value in ("nan", "inf", "-inf"):
        with pytest.raises(PipelineError, match=f"--weight-decay {value}: expected a finite number"):
            check_finite_flags(argparse.Namespace(lr=0.1, weight_decay=float(value)))


@pytest.mark.parametrize("study", ["../escaped", "/tmp/elsewhere", "a/b"])
def test_a_study_name_that_would_leave_runs_tune_is_refused_before_anything_is_written(tmp_path, capsys, study):
    """The study's name becomes ``RUNS_DIR/tune/<study>.db`` and a plots folder: it must stay a plain name."""
    runs = tmp_path / "runs"
    assert main(["tune", "house-prices", "--study", study, "--trials", "1", "--runs-dir", str(runs)]) == 2
    assert "--study" in one_line(capsys.readouterr().err)
    assert not runs.exists() and not (tmp_path / "escaped").exists()
