"""--mlflow: each run mirrored into MLflow exactly as its record says, racing runs both arrive, a store that
cannot be opened costs the run nothing (`runs --mlflow` catches it up later), tuning trials become child runs,
submit adds the public score, and `make mlflow-ui` serves the store on the loopback.

One SQLite store serves the module: two real d2l runs with --mlflow (on the first 300 shipped houses, 2 folds:
about a second of fitting each) fill it, then every other test reads or adds to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import optuna
import pytest

from pipelines.__main__ import main
from pipelines.commands.submit import append_submission
from pipelines.core import kaggle_client, tracking
from pipelines.core.errors import PipelineError
from pipelines.core.files import file_digest

mlflow = tracking.import_mlflow()  # as the product imports it: offline, its log lines not on the terminal

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
D2L = ["house-prices", "--preset", "d2l", "--folds", "2", "--no-progress"]
CI_VARS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS")  # MLflow keeps its telemetry off when it sees these
# a process that mirrors the record argv[1] with --mlflow as a run does, its socket layer blocked
# (tests/network_guard.py); it writes the addresses it tried to reach to $ATTEMPTS_FILE
CHILD = (
    "import argparse, json, os, sys\n"
    f"sys.path.insert(0, {str(TESTS)!r})\n"
    "import network_guard\n"
    "attempts = network_guard.block()\n"
    "del sys.path[0]\n"
    "from pipelines.core import tracking\n"
    "try:\n"
    "    tracking.mirror_run(argparse.Namespace(mlflow=True), sys.argv[1])\n"
    "finally:\n"
    "    open(os.environ['ATTEMPTS_FILE'], 'w').write(json.dumps(attempts))\n"
)


def _helper(name: str):
    """A helper module beside conftest.py (tests are not a package: ``--import-mode=importlib``)."""
    spec = spec_from_file_location(name, TESTS / f"{name}.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _helper("servers")


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
    """The CLI's log files (MLflow's own lines go there) in the test's folder, not the checkout's runs/."""
    monkeypatch.setenv("PIPELINES_LOG_DIR", str(tmp_path / "logs"))


def small_house(folder: Path) -> Path:
    """The first 300 training and 100 test houses of the shipped files."""
    folder.mkdir(parents=True)
    for name, rows in (("train.csv", 301), ("test.csv", 101)):
        lines = (REPO / "data" / "house-prices" / name).read_text().splitlines(keepends=True)
        (folder / name).write_text("".join(lines[:rows]))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """Two d2l runs (seeds 0 and 1), each with --mlflow into one new SQLite store."""
    root = tmp_path_factory.mktemp("tracking")
    data, out, uri = small_house(root / "data"), root / "subs", f"sqlite:///{root / 'store' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.URI_ENV, uri)
        mp.setenv("PIPELINES_LOG_DIR", str(root / "logs"))
        for seed in (0, 1):
            assert main([*D2L, "--seed", str(seed), "--data-dir", str(data), "--out-dir", str(out), "--mlflow"]) == 0
    mlflow.set_tracking_uri(uri)  # the fluent API below reads this store
    return {"uri": uri, "data": data, "out": out, "root": root}


def records(store: dict) -> list[Path]:
    return sorted((store["out"] / "house-prices").glob("*.json"))


def test_each_run_is_mirrored_exactly_as_its_record_says(store, tmp_path):
    client = mlflow.MlflowClient(store["uri"])
    assert len(records(store)) == 2
    assert len(mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                                  filter_string="tags.preset = 'd2l'")) == 2
    for path in records(store):
        record = json.loads(path.read_text())
        found = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                                   filter_string=f"metrics.cv_mean = {record['cv_mean']!r}")
        assert len(found) == 1
        run = found[0]
        assert run.data.metrics["cv_mean"] == record["cv_mean"]  # to the last digit
        assert run.data.params["seed"] == str(record["seed"]) and run.data.params["preset"] == "d2l"
        assert run.info.run_name == path.stem and run.info.status == "FINISHED"
        tags = run.data.tags
        assert (tags["competition"], tags["preset"], tags["seed"]) == ("house-prices", "d2l", str(record["seed"]))
        assert tags["git_commit"] == record["git"]["commit"] and tags["git_dirty"] == str(record["git"]["dirty"])
        assert tags["data_dir"] == record["data_dir"] == str(store["data"])
        folds = sorted(client.get_metric_history(run.info.run_id, "fold_score"), key=lambda m: m.step)
        assert [m.value for m in folds] == record["fold_scores"] and [m.step for m in folds] == [0, 1]
        assert run.data.metrics["model/linear/cv_mean"] == record["models"]["linear"]["cv_mean"]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names == {path.name, *(v for k, v in record["files"].items() if isinstance(v, str)),
                         *record["files"]["figures"].values()}
        copy = client.download_artifacts(run.info.run_id, record["files"]["submission"], str(tmp_path))
        assert file_digest(copy) == file_digest(path.with_name(record["files"]["submission"]))


def test_two_runs_racing_into_a_new_store_both_arrive_offline(store, tmp_path):
    """Two offline processes mirror the two runs into one new store at once: without the store's lock one of
    them failed creating the tables the other was creating."""
    uri = f"sqlite:///{tmp_path / 'raced' / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    procs = []
    for i, record in enumerate(records(store)):
        attempts = tmp_path / f"attempts{i}.json"
        procs.append((attempts, subprocess.Popen([sys.executable, "-c", CHILD, str(record)], cwd=REPO,
                                                 env={**env, tracking.URI_ENV: uri, "ATTEMPTS_FILE": str(attempts)},
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for attempts, proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        assert stdout.startswith("mlflow: new run "), stdout
        assert json.loads(attempts.read_text()) == []  # offline: nothing was reached for
    client = mlflow.MlflowClient(uri)
    raced = client.search_runs([client.get_experiment_by_name("house-prices").experiment_id])
    assert sorted((r.info.run_name, r.data.metrics["cv_mean"]) for r in raced) == \
        sorted((p.stem, json.loads(p.read_text())["cv_mean"]) for p in records(store))


def test_a_store_that_cannot_be_opened_is_one_line_and_the_run_is_kept(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(tracking.URI_ENV, "postgresql://kaggler:s3cretpw@127.0.0.1:1/mlflow")  # nothing listens
    out = tmp_path / "subs"
    assert main([*D2L, "--data-dir", str(store["data"]), "--out-dir", str(out), "--mlflow"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: mlflow store postgresql://kaggler:***@127.0.0.1:1/mlflow")
    assert "s3cretpw" not in captured.err and "the run itself is complete" in err[0]
    record = next((out / "house-prices").glob("*.json"))
    assert f"submission: {record.with_suffix('.csv')}" in captured.out
    files = json.loads(record.read_text())["files"]
    assert all(record.with_name(files[k]).is_file() for k in ("submission", "oof"))
    # a file that is not a database is refused the same way, the record left as it was
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n" * 100)
    monkeypatch.setenv(tracking.URI_ENV, f"sqlite:///{garbage}")
    before = record.read_text()
    with pytest.raises(PipelineError, match="not mirrored .*DatabaseError"):
        tracking.mirror_run(type("Args", (), {"mlflow": True})(), record)
    assert record.read_text() == before
    # what the error line offers: `runs --mlflow` catches the run up once a store opens
    monkeypatch.setenv(tracking.URI_ENV, store["uri"])
    assert main(["runs", "--out-dir", str(out), "--mlflow"]) == 0
    assert "mlflow: 1 new runs, 0 already there, 0 public scores added" in capsys.readouterr().out
    assert len(mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                                  filter_string=f"tags.stem = '{record.stem}'")) == 1


def test_without_the_extra_mlflow_is_one_line_naming_it_before_any_work(tmp_path, monkeypatch, capsys):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else
                        real(name, *a))
    assert main(["house-prices", "--out-dir", str(tmp_path), "--mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mlflow needs MLflow" in err[0] and "pip install -e '.[track]'" in err[0]
    assert not any(tmp_path.iterdir())


def test_tune_trials_are_child_runs_of_the_study_run(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(tracking.URI_ENV, store["uri"])
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["tune", "house-prices", "--trials", "1", "--study", "tracked", "--storage", storage, "--models", "lasso",
            "--folds", "3", "--no-plots", "--quiet", "--runs-dir", str(tmp_path), "--data-dir", str(store["data"]),
            "--mlflow"]
    assert main(argv) == 0, capsys.readouterr().err
    parent = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                                filter_string="tags.study = 'tracked'")
    assert len(parent) == 1 and parent[0].info.run_name == "tune tracked" and parent[0].info.status == "FINISHED"
    children = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    study = optuna.load_study(study_name="tracked", storage=storage)
    assert sorted((c.info.run_name, c.data.metrics["log_rmse"], c.data.params["lasso.alpha"]) for c in children) == \
        sorted((str(t.number), t.value, str(t.params["lasso.alpha"])) for t in study.trials)
    assert parent[0].data.metrics["best_value"] == study.best_value
    # a second session of the same study adds its trial under the same run
    assert main([*argv[:3], "2", *argv[4:]]) == 0
    again = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                               filter_string=f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'")
    assert sorted(c.info.run_name for c in again) == ["0", "1"]


def test_submit_adds_the_public_score_to_the_same_run_once(store, monkeypatch, capsys):
    monkeypatch.setenv(tracking.URI_ENV, store["uri"])
    record = records(store)[0]
    append_submission(record, {"time_utc": "2026-01-01T00:00:00+00:00", "message": "m", "kaggle_ref": 7})
    monkeypatch.setattr(kaggle_client, "require_credentials", lambda: kaggle_client.Credentials("test", "test"))
    monkeypatch.setattr(kaggle_client, "submissions", lambda *a, **k: [{"ref": 7, "public_score": 0.15432}])
    csv = record.with_suffix(".csv")
    for _ in range(2):  # the second time finds the score there already
        assert main(["submit", str(csv), "--score-only", "--mlflow"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "1 public score added" in out and "already mirrored" in out
    assert json.loads(record.read_text())["submissions"][0]["public_score"] == 0.15432
    run = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                             filter_string=f"tags.stem = '{record.stem}'")
    assert len(run) == 1
    history = mlflow.MlflowClient(store["uri"]).get_metric_history(run[0].info.run_id, "public_score")
    assert [(m.step, m.value) for m in history] == [(0, 0.15432)]


def test_make_mlflow_ui_serves_the_store_on_the_loopback_only(store):
    port = servers.free_port()
    run = mlflow.search_runs(experiment_names=["house-prices"], output_format="list",
                             filter_string=f"tags.stem = '{records(store)[0].stem}'")[0]
    with servers.make_server("mlflow-ui", port, {tracking.URI_ENV: store["uri"]}) as proc:
        assert "<title>MLflow</title>" in servers.fetch(f"http://127.0.0.1:{port}/", proc)
        answer = json.loads(servers.fetch(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id="
                                          f"{run.info.run_id}", proc))["run"]
        assert answer["info"]["run_name"] == records(store)[0].stem
        assert {"key": "cv_mean", "value": run.data.metrics["cv_mean"]} in [
            {k: m[k] for k in ("key", "value")} for m in answer["data"]["metrics"]]
        experiment = json.loads(servers.fetch(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                                              "?experiment_name=house-prices", proc))["experiment"]
        assert experiment["experiment_id"] == answer["info"]["experiment_id"]
        assert not servers.answers_elsewhere(port)
    assert f"MLflow UI on {store['uri']}: http://127.0.0.1:{port}" in proc.stdout.read()
