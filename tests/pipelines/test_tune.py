"""Tuning sessions: exact trial counts, resume after a kill, parallel workers on PostgreSQL, clean errors.

Every study tunes the house-prices strong preset restricted to lasso and elastic net on 3 folds (about a second
a trial once the per-fold features are cached), so the whole file stays well under a minute or two.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipelines.__main__ import main
from pipelines.core.tuning import mask_url

REPO = Path(__file__).resolve().parents[2]
CHEAP = ["--models", "lasso,enet", "--folds", "3"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def tune_argv(study: str, storage: str, trials: int, *extra: str) -> list[str]:
    return ["tune", "house-prices", "--trials", str(trials), "--study", study, "--storage", storage, *CHEAP,
            "--no-plots", *extra]


def load(study: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def assert_exact(study: optuna.Study, n: int) -> None:
    """n finished trials, nothing left running or queued, no parameter set run twice."""
    done = finished(study)
    assert len(done) == n
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == len(params), "a trial was run twice"


# ------------------------------------------------------------------------------------------ sqlite
def test_resume_adds_only_missing_trials_and_best_writes_a_record(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(tune_argv("resume", url, 3, "--runs-dir", str(tmp_path))) == 0
    study = load("resume", url)
    assert_exact(study, 3)
    assert study.trials[0].user_attrs.get("preset_defaults")  # the preset's own parameters come first
    assert study.trials[0].params == {"lasso.alpha": 0.0005, "enet.alpha": 0.0006, "enet.l1_ratio": 0.8}
    assert all(t.intermediate_values for t in finished(study))  # the running CV was reported per fold

    # the same command again does nothing new; a larger --trials adds only the missing trials
    assert main(tune_argv("resume", url, 3, "--runs-dir", str(tmp_path))) == 0
    assert len(load("resume", url).trials) == 3
    out_dir = tmp_path / "subs"
    assert main(tune_argv("resume", url, 5, "--runs-dir", str(tmp_path), "--best", "--out-dir", str(out_dir))) == 0
    study = load("resume", url)
    assert_exact(study, 5)
    assert [t.number for t in study.trials] == list(range(5))

    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("trials 5/5") and "best" in line and "ETA" in line for line in lines)
    submission = Path(lines[-1].removeprefix("submission: "))
    record = json.loads(submission.with_suffix(".json").read_text())
    assert record["study"] == "resume" and record["trial"] == study.best_trial.number
    assert record["config"]["params"]["lasso"]["alpha"] == study.best_trial.params["lasso.alpha"]
    assert record["cv_mean"] == pytest.approx(study.best_value, abs=1e-9)  # --best reproduces the trial's CV


def test_study_refuses_a_different_setup(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(tune_argv("setup", url, 1)) == 0
    capsys.readouterr()
    assert main(["tune", "house-prices", "--trials", "2", "--study", "setup", "--storage", url,
                 "--models", "lasso", "--folds", "3", "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: study 'setup' was made with models") and "\n" not in err


# -------------------------------------------------------------------------------------------- flags
def test_another_competitions_tune_flag_is_one_line_before_any_study(tmp_path: Path, capsys) -> None:
    """--epochs is leaves' own tune flag (``Competition.add_tune_arguments``), not house prices'."""
    assert main(["tune", "house-prices", "--epochs", "2", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: tune house-prices: unrecognized arguments: --epochs 2 (--epochs is for tune leaves)"
    assert not (tmp_path / "runs").exists()


def test_workers_get_the_competitions_flags_and_flags_before_it_keep_their_values() -> None:
    from pipelines.__main__ import build_parser
    from pipelines.commands.tune import child_argv

    argv = ["tune", "--seed", "3", "leaves", "--epochs", "2", "--set", "model=resnet18", "--set=batch_size=8",
            "--trials", "5"]
    args = build_parser(argv).parse_args(argv)
    expected = (3, 5, 2, ["model=resnet18", "batch_size=8"])
    assert (args.seed, args.trials, args.epochs, args.set) == expected
    args.study = "s"
    worker = child_argv(args, 1)[3:]  # after "python -m pipelines"
    again = build_parser(worker).parse_args(worker)
    assert (again.seed, again.trials, again.epochs, again.set) == expected and again.worker_index == 1


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("url", [
    "not-a-url",
    "postgresql://kaggler:s3cretpw@127.0.0.1:1/optuna",  # nothing listens on port 1
    "postgresql+psycopg2://kaggler:s3cretpw@no-such-host.invalid:5432/optuna",
])
def test_bad_storage_is_one_line_without_the_password(url: str, capsys) -> None:
    assert main(tune_argv("bad", url, 1)) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "s3cretpw" not in captured.err + captured.out
    if "kaggler" in url:
        assert "kaggler:***@" in err


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_url("sqlite:///runs/tune/x.db") == "sqlite:///runs/tune/x.db"


# --------------------------------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (Debian's binaries, installed by .ci/run) on a free port."""
    script = REPO / ".ci" / "postgres"
    if subprocess.run([script, "install"], capture_output=True).returncode != 0:
        pytest.skip("PostgreSQL binaries are missing and could not be installed (apt-get install postgresql)")
    folder = tempfile.mkdtemp(prefix="tune-pg-")  # not under pytest's tmp: the postgres user must reach it
    os.chmod(folder, 0o755)
    data = os.path.join(folder, "data")
    started = subprocess.run([script, "start", data, str(_free_port())], capture_output=True, text=True)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {started.stderr.strip()}")
    yield started.stdout.strip()
    subprocess.run([script, "stop", data], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", *argv]


def test_two_workers_on_postgres_finish_exactly_the_requested_trials(postgres_url: str, tmp_path: Path) -> None:
    done = subprocess.run(cli(*tune_argv("two", postgres_url, 6, "--workers", "2", "--runs-dir", str(tmp_path))),
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    study = load("two", postgres_url)
    assert_exact(study, 6)
    assert "trials 6/6" in done.stdout


def test_sigkill_mid_trial_then_resume(postgres_url: str, tmp_path: Path) -> None:
    """A worker killed inside a trial leaves it RUNNING; the next session fails it by heartbeat, retries
    its parameters on the same folds (the fold scores it reported before the kill come out again), and the
    study ends with exactly the requested trials."""
    argv = cli(*tune_argv("kill", postgres_url, 6, "--heartbeat-interval", "1", "--grace-period", "3",
                          "--runs-dir", str(tmp_path)))
    worker = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
            try:
                study = load("kill", postgres_url)
            except KeyError:  # not created yet
                continue
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values]
            if running and finished(study):
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                # the trial may have ended between the look and the kill: the one still RUNNING is the killed one
                still = [t for t in load("kill", postgres_url).get_trials(states=(TrialState.RUNNING,))
                         if t.intermediate_values]
                if still:
                    killed = still[0].number
                else:  # killed between trials: start another worker and catch it inside the next one
                    worker = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert killed is not None, "the worker never was inside a trial after finishing one"
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
    assert load("kill", postgres_url).trials[killed].state == TrialState.RUNNING  # nobody cleaned up yet

    resumed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    study = load("kill", postgres_url)
    assert study.trials[killed].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert retries and retries[0].params == study.trials[killed].params
    # a seed fixes the folds and the models: the retry's running CV repeats the killed trial's, fold for fold
    # (the retry may be pruned earlier, so compare the folds both reported; the first fold always is)
    reported, again = study.trials[killed].intermediate_values, retries[0].intermediate_values
    common = sorted(set(reported) & set(again))
    assert common and common[0] == min(reported)
    assert [again[s] for s in common] == pytest.approx([reported[s] for s in common], rel=1e-9)
    assert_exact(study, 6)



# ------------------------------------------------------------------------------------------- leaves
def test_tune_leaves_tiny_study_and_best(tmp_path: Path, capsys) -> None:
    """One trial of the leaves recipe on a tiny synthetic set; --best writes the run and names the trial."""
    from pipelines.competitions.leaves.leafgen import generate_leaves

    data = generate_leaves(tmp_path / "data", n_species=3, n_train=24, n_test=6, size=32, seed=1)
    url = f"sqlite:///{tmp_path / 'leaves.db'}"
    argv = ["tune", "leaves", "--trials", "1", "--study", "leaves", "--storage", url, "--folds", "2", "--epochs", "1",
            "--data-dir", str(data), "--runs-dir", str(tmp_path), "--out-dir", str(tmp_path / "subs"), "--no-plots",
            "--best", "--set", "model=test_efficientnet", "--set", "pretrained=false", "--set", "batch_size=8",
            "--set", "img_size=32", "--set", "progress=false"]
    assert main(argv) == 0
    study = load("leaves", url)
    assert_exact(study, 1)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert list(study.trials[0].intermediate_values) == [1, 2]  # running accuracy after each epoch of 2 folds
    submission = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("submission: "))
    record = json.loads(submission.with_suffix(".json").read_text())
    assert record["study"] == "leaves" and record["trial"] == 0
    assert not (tmp_path / "tune" / "leaves" / "trials" / "trial0").exists()  # trial checkpoints cleaned up
