"""Where Kagglers look: optuna-dashboard as a real server on the loopback (started by its make target, as a user
starts it), and `runs --plot`, each submitted run's CV against its public score. (`make mlflow-ui` is tested in
test_tracking.py, on the store that module fills.)"""

from __future__ import annotations

import json
import subprocess
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import optuna
from PIL import Image

from pipelines.__main__ import main
from pipelines.commands.submit import append_submission, set_scores

REPO = Path(__file__).resolve().parents[2]


def _helper(name: str):
    """A helper module beside conftest.py (tests are not a package: ``--import-mode=importlib``)."""
    spec = spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _helper("servers")


def house_record(folder: Path, stem: str, cv: float, **extra) -> Path:
    """A small hand-made house-prices run: its record and its submission."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.csv").write_text("Id,SalePrice\n1461,1.0\n")
    path = folder / f"{stem}.json"
    path.write_text(json.dumps({
        "competition": "house-prices", "preset": "strong", "metric": "log_rmse", "cv_mean": cv, "version": 2,
        "seed": 0, "config": {"seed": 0}, "created_utc": f"2026-01-01T00:00:0{stem[-1]}+00:00",
        "files": {"submission": f"{stem}.csv"}, **extra}))
    return path


def test_make_dashboard_serves_the_study_on_the_loopback(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="watched", storage=storage)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=3)
    port = servers.free_port()
    with servers.make_server("dashboard", port, {}, "STUDY=watched", f"STORAGE={storage}") as proc:
        page = servers.fetch(f"http://127.0.0.1:{port}/dashboard", proc)
        assert "<title>Optuna Dashboard</title>" in page
        studies = json.loads(servers.fetch(f"http://127.0.0.1:{port}/api/studies", proc))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["watched"]
        study_id = studies[0]["study_id"]
        detail = json.loads(servers.fetch(f"http://127.0.0.1:{port}/api/studies/{study_id}", proc))
        assert detail["name"] == "watched"
        assert [t["values"] for t in detail["trials"]] == [[t.value] for t in study.trials]
        assert not servers.answers_elsewhere(port)
    assert f"optuna-dashboard on {storage}: http://127.0.0.1:{port}/dashboard/studies/{study_id}" in proc.stdout.read()


def test_make_dashboard_names_what_is_missing_in_one_line(tmp_path):
    done = subprocess.run(servers.make_argv("dashboard", "STUDY=nope", f"STORAGE=sqlite:///{tmp_path / 'none.db'}"),
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.startswith(f"error: no study database at {tmp_path / 'none.db'}")


def test_runs_plot_draws_the_submitted_runs_cv_against_their_public_scores(tmp_path, capsys):
    folder = tmp_path / "house-prices"
    # CV ranks a < b < c, the leaderboard b < a < c: Spearman's rank correlation 1 - 6 * 2 / (3 * 8) = 0.5
    for ref, (stem, cv, public) in enumerate([("run1", 0.110, 0.125), ("run2", 0.120, 0.121), ("run3", 0.130, 0.135)]):
        record = house_record(folder, stem, cv)
        append_submission(record, {"time_utc": "2026-01-01T00:00:00+00:00", "message": "m", "kaggle_ref": ref})
        set_scores(record, {ref: public})  # as `submit --fetch-score` writes a score that came back
    house_record(folder, "run4", 0.100)  # the best CV, never submitted
    assert main(["runs", "--out-dir", str(tmp_path), "--plot"]) == 0
    out = capsys.readouterr().out
    png = folder / "runs_cv_vs_public.png"
    assert f"plot: {png} (CV vs public score of 3 runs, rank correlation 0.50; not plotted, no public score: #1)" in out
    row1 = out.splitlines()[3]  # the table: title, header, rule, row #1
    assert row1.startswith("1 ") and row1.endswith("run4.csv")  # row #1, the best CV, is the unsubmitted one
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 300
    (folder / "run1.json").unlink()  # two submitted runs left: drawn, the correlation said to be unknown
    assert main(["runs", "--out-dir", str(tmp_path), "--plot"]) == 0
    assert "of 2 runs, rank correlation n/a (fewer than 3 runs); not plotted, no public score: #1)" in \
        capsys.readouterr().out
    (folder / "run2.json").unlink()
    (folder / "run3.json").unlink()
    png.unlink()
    assert main(["runs", "--out-dir", str(tmp_path), "--plot"]) == 0
    assert "plot: none of the 1 runs has a public score yet" in capsys.readouterr().out
    assert not png.exists()
