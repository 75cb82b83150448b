"""A run record mirrored into MLflow (``--mlflow``): the tracker Kagglers already open, offline, opt-in.

The record beside the submission stays the source of truth; MLflow holds a copy. One experiment per
competition, one MLflow run per pipeline run, named like the run's files (its stem): params are the config,
tags the provenance (competition, preset, seed, git commit and dirty flag, data folder), metrics the CV
(mean, std, pooled, each fold's score as a step, each model's scores) and the public scores ``submit`` wrote
into the record; artifacts are the run's files. Mirroring is idempotent: a run already in the store only
gains the public scores it lacks, which is how ``submit --mlflow`` adds a score when Kaggle returns it.

The store is ``$MLFLOW_TRACKING_URI``, else the SQLite file ``RUNS_DIR/mlflow.db`` (MLflow's own default
backend), with artifacts beside it in ``RUNS_DIR/mlartifacts``. MLflow is imported here only, when a command
is given ``--mlflow``: ``--help`` and a plain run never pay its import (about 2 s), and it lives in the
optional ``track`` extra. Its telemetry is switched off before the import (runs stay offline) and its log
lines go to the CLI's log file, not the terminal.

Tracking never costs a run: it starts after the run's files are written, and a store that cannot be opened or
written is one ``error:`` line naming the store (exit 2: the user asked for the mirror and scripts must see it
is missing), the run's files staying where the run wrote them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pipelines.core.errors import PipelineError, mask_secrets

URI_ENV = "MLFLOW_TRACKING_URI"
EXTRA = "pip install -e '.[track]'"
STEM_TAG = "stem"  # the run's file stem: how a record finds its MLflow run again
PUBLIC_SCORE = "public_score"  # one step per entry of the record's ``submissions``
_BAD_KEY = re.compile(r"[^\w\-./ ]")  # MLflow keys: letters, digits, _ - . / and spaces


# ------------------------------------------------------------------------------------------ the store
def default_uri(runs_dir: str | Path = "runs") -> str:
    """``sqlite:///RUNS_DIR/mlflow.db``, absolute (a run and the UI started elsewhere find the same file)."""
    return f"sqlite:///{(Path(runs_dir) / 'mlflow.db').resolve()}"


def tracking_uri(runs_dir: str | Path | None = None) -> str:
    """The store: ``$MLFLOW_TRACKING_URI``, else :func:`default_uri` under ``runs_dir`` (default ``runs``)."""
    return os.environ.get(URI_ENV) or default_uri(runs_dir or "runs")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser().resolve()


def require_mlflow() -> None:
    """One error line naming the extra when MLflow is not installed (checked without importing it)."""
    if importlib.util.find_spec("mlflow") is None:
        raise PipelineError(f"--mlflow needs MLflow, which is in the optional 'track' extra: {EXTRA}")


class MlflowFlag(argparse.Action):
    """``--mlflow``: a plain switch that refuses, at parse time and before any work, an install without MLflow."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None):  # noqa: A002 - argparse's
        super().__init__(option_strings, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            require_mlflow()
        except PipelineError as err:
            parser.error(str(err))
        setattr(namespace, self.dest, True)


def import_mlflow():
    """``mlflow``, imported offline and quiet: telemetry off, its loggers left to the CLI's log file."""
    require_mlflow()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a new store's 100 migrations, as MLflow itself does
    import mlflow

    return mlflow


def store_error(uri: str, err: BaseException, what: str, after: str = "") -> PipelineError:
    """One line: the store (its password masked, also where a driver echoes it), what failed, the first line
    of the reason, and ``after`` (what is safe)."""
    reason = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's exception
    line = (str(reason).strip().splitlines() or [""])[0][:300]
    password = re.match(r"[\w+.-]+://[^:/@]*:([^@]*)@", uri)
    text = f"mlflow store {uri}: {what} ({type(reason).__name__}{': ' + line if line else ''})"
    text += f"; {after}" if after else ""
    return PipelineError(mask_secrets(text, [password.group(1)] if password else []))


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One writer at a time on a SQLite store, across processes (a lock file beside the database).

    Two runs finishing together would otherwise both create the tables of a new store, or the experiment,
    and the loser fail; SQLite serialises single writes but not those. Other stores need nothing."""
    path = sqlite_file(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def probe(uri: str) -> None:
    """A database server that does not answer fails now, in one try: MLflow itself retries for 100 s."""
    if uri.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri)
        try:
            engine.connect().close()
        finally:
            engine.dispose()


def client(uri: str):
    """An ``MlflowClient`` on ``uri``, its store opened (tables created on a new SQLite file) now."""
    import_mlflow()
    from mlflow.tracking import MlflowClient

    probe(uri)
    c = MlflowClient(tracking_uri=uri)
    c.search_experiments(max_results=1)
    return c


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite store: ``mlartifacts/<experiment>`` next to the database (MLflow's default would be
    ``./mlruns`` under whatever folder the command ran in). Other stores keep their own default."""
    path = sqlite_file(uri)
    return (path.parent / "mlartifacts" / experiment).as_uri() if path else None


def experiment_id(c, name: str, uri: str) -> str:
    """The experiment ``name``, created on first use; tagged as model training, so the UI opens it on its runs
    table (MLflow 3's UI otherwise opens an experiment on its GenAI traces)."""
    found = c.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location(uri, name),
                               tags={"mlflow.experimentKind": "custom_model_development"})


def find_run(c, experiment: str, stem: str) -> str | None:
    """The MLflow run of the run ``stem`` in ``experiment``, if it was mirrored already."""
    runs = c.search_runs([experiment], filter_string=f"tags.{STEM_TAG} = '{stem}'", max_results=1)
    return runs[0].info.run_id if runs else None


# ------------------------------------------------------------------------------------- the record's parts
def _key(name: str) -> str:
    return _BAD_KEY.sub("_", str(name))[:250]


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: ``params.lasso.alpha`` -> ``"0.001"``; lists and ``None`` as JSON."""
    out = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, key + "."))
        else:
            out[_key(key)] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def params(record: dict) -> dict[str, str]:
    """The config, and the record's seed when the config holds none (a blend's)."""
    out = flatten(record.get("config") or {})
    if "seed" not in out and record.get("seed") is not None:
        out["seed"] = str(record["seed"])
    return {k: v[:6000] for k, v in out.items()}  # MLflow's limit on a param value


def tags(record: dict, path: Path) -> dict[str, str]:
    git = record.get("git") or {}
    values = {"competition": record["competition"], "preset": record.get("preset"), "metric": record.get("metric"),
              "seed": record.get("seed"), "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
              "data_dir": record.get("data_dir") or "(the competition's default)",
              "kaggle_competition": record.get("kaggle_competition"), STEM_TAG: path.stem, "record": str(path),
              "study": record.get("study"), "trial": record.get("trial"),  # tune --best: the study it came from
              "mlflow.source.git.commit": git.get("commit")}
    return {k: str(v) for k, v in values.items() if v is not None}


def metrics(record: dict) -> list[tuple[str, float, int]]:
    """``(key, value, step)``: the CV, each fold's score as a step, each model's (or blended run's) scores:
    ``model/<name>/...`` (house prices: its models; a house blend: its runs), ``input/<run>/...`` (a leaves blend)."""
    out = [(k, record[k], 0) for k in ("cv_mean", "cv_std", "cv_pooled", "cv_excluding_outliers")
           if _number(record.get(k))]
    out += [("fold_score", s, i) for i, s in enumerate(record.get("fold_scores") or [])]
    models = record.get("models") if isinstance(record.get("models"), dict) else {}
    for name, info in models.items():
        if isinstance(info, dict):
            out += [(f"model/{name}/{k}", info[k], 0) for k in ("cv_mean", "cv_std", "weight") if _number(info.get(k))]
            out += [(f"model/{name}/fold_score", s, i) for i, s in enumerate(info.get("fold_scores") or [])]
    for info in [] if models else record.get("inputs") or []:  # a leaves blend's runs (a house blend: models)
        if isinstance(info, dict) and info.get("run"):
            out += [(f"input/{info['run']}/{k}", info[k], 0) for k in ("cv_mean", "weight") if _number(info.get(k))]
    if _number((record.get("timings") or {}).get("total_s")):
        out.append(("wall_s", record["timings"]["total_s"], 0))
    return [(_key(k), float(v), step) for k, v, step in out if _number(v)]


def public_scores(record: dict) -> list[tuple[int, float]]:
    """``(entry, score)`` for each submission of the record that has its public score."""
    return [(i, float(s["public_score"])) for i, s in enumerate(record.get("submissions") or [])
            if isinstance(s, dict) and _number(s.get("public_score"))]


def artifacts(record: dict, path: Path) -> list[Path]:
    """The record and every file it names beside itself that exists: submission, OOF, figures, tables."""
    files = record.get("files") or {}
    names = [files.get("submission"), files.get("oof"), *(files.get("figures") or {}).values(),
             *(files.get("tables") or {}).values()]
    return [path, *(path.with_name(n) for n in names if n and path.with_name(n).is_file())]


def _ms(iso: str | None, minus_s: float = 0.0) -> int | None:
    try:
        return int((datetime.fromisoformat(iso).timestamp() - minus_s) * 1000) if iso else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- mirror
def mirror_record(path: str | Path, uri: str, c=None) -> tuple[str, bool, int]:
    """Mirror the record at ``path`` into the store ``uri`` (through the client ``c``, else a new one); returns
    the MLflow run id, whether it was new and how many public scores it gained.

    A run already mirrored only gains the public scores it lacks (``submit`` adds them to the record)."""
    import_mlflow()
    from mlflow.entities import Metric, Param, RunTag

    path = Path(path).resolve()
    record = json.loads(path.read_text())
    with store_lock(uri):
        c = c or client(uri)
        experiment = experiment_id(c, record["competition"], uri)
        run_id = find_run(c, experiment, path.stem)
        new = run_id is None
        if new:
            total = (record.get("timings") or {}).get("total_s")
            run_id = c.create_run(experiment, run_name=path.stem, tags=tags(record, path),
                                  start_time=_ms(record.get("created_utc"), total if _number(total) else 0)
                                  ).info.run_id
            try:
                now = _ms(record.get("created_utc")) or 0
                batch = [Param(k, v) for k, v in params(record).items()]
                for i in range(0, len(batch), 100):  # MLflow takes at most 100 params per call
                    c.log_batch(run_id, params=batch[i:i + 100])
                c.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v, step in metrics(record)],
                            tags=[RunTag("cv_rule", str(record.get("cv_rule")))] if record.get("cv_rule") else [])
                for file in artifacts(record, path):
                    c.log_artifact(run_id, str(file))
            except BaseException:
                c.set_terminated(run_id, "FAILED")
                raise
            c.set_terminated(run_id, "FINISHED", end_time=_ms(record.get("created_utc")))
        logged = {m.step for m in c.get_metric_history(run_id, PUBLIC_SCORE)}
        scores = [Metric(PUBLIC_SCORE, s, _ms((record["submissions"][i] or {}).get("time_utc")) or 0, i)
                  for i, s in public_scores(record) if i not in logged]
        if scores:
            c.log_batch(run_id, metrics=scores)
    return run_id, new, len(scores)


def mirror_run(args: argparse.Namespace, written) -> None:
    """After a run's files are written: mirror its record when ``--mlflow`` was given, else nothing.

    ``written``: the writer's ``RunFiles``, or any path of the run (its record is beside it); ``None`` (a DDP
    rank other than 0) mirrors nothing. A failure is one ``PipelineError`` naming the store and saying the
    run's files are written."""
    if not getattr(args, "mlflow", False) or written is None:
        return
    record = Path(getattr(written, "record", written)).with_suffix(".json")
    uri = tracking_uri(getattr(args, "runs_dir", None))
    try:
        run_id, new, scores = mirror_record(record, uri)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - any store failure is one line; the run itself is done
        raise store_error(uri, err, f"{record.stem} not mirrored", f"the run itself is complete: {record} "
                          "(`python -m pipelines runs --mlflow` mirrors it later)") from None
    what = "new run" if new else "run" + ("" if scores else " already mirrored")
    gained = f", {scores} public score{'s' * (scores > 1)} added" if scores else ""
    print(f"mlflow: {what} {run_id} ({record.stem}{gained}) in {mask_secrets(uri)}", flush=True)


def mirror_all(args: argparse.Namespace, records: list[Path]) -> str | None:
    """``runs --mlflow``: every run on disk into the store, those already there only gaining their new public
    scores: runs made before tracking was on, or whose mirror failed, catch up. Returns the line to print."""
    if not getattr(args, "mlflow", False) or not records:
        return None
    uri = tracking_uri(getattr(args, "runs_dir", None))
    new = scores = 0
    path = records[0]
    try:
        c = client(uri)
        for path in records:
            _, fresh, gained = mirror_record(path, uri, c)
            new, scores = new + fresh, scores + gained
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - one line, naming how far it got
        raise store_error(uri, err, f"{path.stem} not mirrored", f"{new} new runs were") from None
    return (f"mlflow: {new} new runs, {len(records) - new} already there, {scores} public scores added, in "
            f"{mask_secrets(uri)}")


# ---------------------------------------------------------------------------------------------- studies
PARENT_ENV = "PIPELINES_MLFLOW_PARENT"  # "<experiment id>/<run id>" of the study's run, for tune's workers


def study_run(uri: str, competition: str, study: str, storage: str, setup: dict) -> tuple[str, str]:
    """The MLflow run of an Optuna study, parent of its trials' runs: made by the study's first session with
    ``--mlflow``, found again (by study name and storage) by every later one. Returns (experiment, run id)."""
    import hashlib

    key = hashlib.sha256(f"{study}\n{storage}".encode()).hexdigest()[:16]  # a safe value for a filter string
    with store_lock(uri):
        c = client(uri)
        experiment = experiment_id(c, competition, uri)
        found = c.search_runs([experiment], filter_string=f"tags.study_key = '{key}'", max_results=1)
        if found:
            c.update_run(found[0].info.run_id, status="RUNNING")
            return experiment, found[0].info.run_id
        run = c.create_run(experiment, run_name=f"tune {study}", tags={
            "study": study, "storage": mask_secrets(storage), "study_key": key, "competition": competition,
            "kind": "optuna study"})
        for name, value in flatten(setup).items():
            c.log_param(run.info.run_id, name, value[:6000])
        return experiment, run.info.run_id


def end_study_run(uri: str, run_id: str, study, plots: dict[str, Path], status: str = "FINISHED") -> None:
    """The session's end: best value (step: the study's finished trials), its plots, the run's status
    (``FINISHED``, ``FAILED``, ``KILLED``: MLflow's names)."""
    from optuna.trial import TrialState

    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    with store_lock(uri):
        c = client(uri)
        try:
            c.log_metric(run_id, "best_value", float(study.best_value), step=done)
            c.set_tag(run_id, "best_trial", str(study.best_trial.number))
        except ValueError:  # no complete trial yet
            pass
        for path in plots.values():
            c.log_artifact(run_id, str(path), "plots")
        c.set_terminated(run_id, status)


class TrialRuns:
    """Optuna callback: each finished trial an MLflow child run of the study's run (optuna-integration's
    ``MLflowCallback``: params, value, state and user attributes), in the competition's experiment.

    Works from any worker process (the parent is named by id, not by MLflow's active run) and on any Optuna
    storage. A store that fails does not stop the study: the first failure is printed as a warning and kept
    in ``error`` (the command ends with it), and later trials are not mirrored."""

    def __init__(self, uri: str, experiment: str, parent: str, metric: str):
        import_mlflow()
        from optuna_integration.mlflow import MLflowCallback

        self.uri, self.error = uri, None
        self.callback = MLflowCallback(tracking_uri=uri, metric_name=metric, create_experiment=False,
                                       mlflow_kwargs={"experiment_id": experiment,
                                                      "tags": {"mlflow.parentRunId": parent}})

    def __call__(self, study, trial) -> None:
        if self.error is not None or trial.user_attrs.get("surplus"):  # a surplus trial ran nothing
            return
        try:
            with store_lock(self.uri):
                self.callback(study, trial)
        except Exception as err:  # noqa: BLE001 - the study goes on without its mirror
            self.error = store_error(self.uri, err, f"trial {trial.number} not mirrored, nor any later one",
                                     "the study goes on")
            print(f"warning: {self.error}", file=sys.stderr, flush=True)
