"""``python -m pipelines tune <competition>``: a pruned, resumable, parallel Optuna study.

The objective is the competition's own (``Competition.make_objective``: its pipeline's shared CV score over
a search space that lives beside the models it tunes, e.g. ``house_prices/estimators.SEARCH_SPACES``,
``leaves/objective.SEARCH_SPACE``); its own flags (``Competition.add_tune_arguments``, e.g. house prices'
``--models``, leaves' ``--epochs`` and ``--set``) follow its name. ``--trials N`` is the total
number of finished trials wanted in the study, so re-running the same command resumes a killed session.
``--workers K`` starts K processes on the same study (they stop with it: Ctrl-C, SIGTERM, even ``kill -9``);
workers on other machines join by running the same command with the same ``--storage postgresql://…`` and
``--study``. ``--best`` then trains the best trial's configuration and writes a submission through the
pipeline's normal run path. ``--mlflow`` mirrors the study into MLflow: a parent run for the study, a child run
per trial (``core.tracking.TrialRuns``), and the ``--best`` run like any other (docs/tracking.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import optuna

from pipelines.commands import common_parser, int_at_least, positive_float
from pipelines.competitions import Competition, get_competition, list_competitions
from pipelines.core import tracking, tuning
from pipelines.core.errors import PipelineError, Terminated

STORAGE_ENV = "PIPELINES_TUNE_STORAGE"  # the storage URL without putting its password on a command line
PARENT_ENV = "PIPELINES_TUNE_PARENT"  # a worker's parent pid: the worker stops when it is gone


def make_objective(args: argparse.Namespace):
    """The competition's objective (``Competition.make_objective``), from the registry."""
    competition = get_competition(args.competition)
    if competition.make_objective is None:
        raise PipelineError(f"{competition.name} has no tuning objective")
    return competition.make_objective(args)


# ------------------------------------------------------------------------------------------- studies
def validate_inputs(args: argparse.Namespace, objective) -> None:
    """Everything a study's first trial would trip on, checked before any study or storage file exists:
    the data (read with the pipeline's own checks), the folds for its rows, the settings, the folders."""
    from submissions.writer import check_writable_dir

    if args.folds is not None and args.folds < 2:  # 0 must not silently mean the default
        raise PipelineError(f"--folds must be at least 2, got {args.folds}")
    objective.check_inputs(args)
    check_writable_dir(args.runs_dir, "--runs-dir")
    if args.best:
        check_writable_dir(args.out_dir)


def requeue_defaults(study: optuna.Study, objective) -> bool:
    """Queue the preset's defaults again when no trial of them is finished, running or queued (e.g. trial 0
    was interrupted by Ctrl-C and is FAIL): the study always contains the defaults. Returns whether it did."""
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("preset_defaults") and t.state in tuning.LIVE for t in trials):
        return False
    study.enqueue_trial(objective.defaults(), user_attrs={"preset_defaults": True})
    return True


def open_study(args: argparse.Namespace, objective, url: str) -> optuna.Study:
    """Create the study (and queue the preset's defaults as its first trial) or load it and check that
    it was made with the same setup (paths normalised). Loading also re-queues the defaults when their
    trial failed, so a study interrupted during trial 0 still starts from the preset."""
    storage = tuning.open_storage(url, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    pruner = tuning.make_pruner(args.pruner)
    default_data = get_competition(args.competition).default_data
    setup = tuning.normalise_setup(objective.setup, default_data)
    created = False
    try:
        try:
            study = optuna.create_study(study_name=args.study, storage=storage, direction=objective.direction,
                                        pruner=pruner)
            study.set_user_attr("setup", setup)
            study.enqueue_trial(objective.defaults(), user_attrs={"preset_defaults": True})
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=args.study, storage=storage, pruner=pruner)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - the server went away between connect and use
        raise tuning.storage_error(url, err) from None
    saved = study.user_attrs.get("setup")
    if saved is not None and tuning.normalise_setup(saved, default_data) != setup:
        saved = tuning.normalise_setup(saved, default_data)
        diff = ", ".join(f"{k} {saved.get(k)!r} (now {v!r})" for k, v in setup.items() if saved.get(k) != v)
        raise PipelineError(f"study {args.study!r} was made with {diff}; use the same flags or a new --study")
    if study.direction.name.lower() != objective.direction:
        raise PipelineError(f"study {args.study!r} is a {study.direction.name.lower()} study, "
                            f"not {objective.direction}")
    if (not created and not args.worker_index and tuning.count(study, tuning.COUNTED) < args.trials
            and requeue_defaults(study, objective)):
        print("the preset's defaults have no finished trial yet: queued them again", flush=True)
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = tuning.make_sampler(args.seed, n_existing, args.worker_index)
    return study


def child_argv(args: argparse.Namespace, index: int) -> list[str]:
    """The same command for one worker process (``--workers 1``, quiet, no plots, no --best)."""
    argv = [sys.executable, "-m", "pipelines", "tune", args.competition, "--seed", str(args.seed),
            "--out-dir", args.out_dir, "--trials", str(args.trials), "--study", args.study,
            "--pruner", args.pruner, "--runs-dir", args.runs_dir, "--workers", "1", "--worker-index", str(index),
            "--heartbeat-interval", str(args.heartbeat_interval), "--grace-period", str(args.grace_period),
            "--quiet", "--no-plots", *(["--mlflow"] if args.mlflow else [])]
    for flag in ("timeout", "folds", "data_dir"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv + args.competition_args  # the competition's own flags, as they were given


def run_workers(args: argparse.Namespace, study: optuna.Study, progress: tuning.Progress) -> None:
    """Start K worker processes on the study and print progress until they exit.

    The workers stop with this process: on Ctrl-C, SIGTERM (the CLI raises it as ``errors.Terminated``) or any
    error here they are sent SIGTERM (their running trials are failed and the next session runs new ones), and
    a ``kill -9`` of this process reaches them through ``tuning.die_with_parent``."""
    # the storage URL travels in the environment, not in argv: a password in argv is visible to every local
    # user through ps and /proc
    env = {**os.environ, "PYTHONUNBUFFERED": "1", STORAGE_ENV: args.storage, PARENT_ENV: str(os.getpid()),
           **({tracking.PARENT_ENV: "/".join(args.mlflow_parent)} if args.mlflow else {})}
    procs: list[subprocess.Popen] = []
    last = None
    try:
        for i in range(args.workers):
            procs.append(subprocess.Popen(child_argv(args, i + 1), env=env))
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            line = progress.line(study)
            if line.split(";")[0] != last:
                last = line.split(";")[0]
                print(line, flush=True)
    except BaseException:
        stop_workers(procs)
        raise
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise PipelineError(f"{len(failed)} of {len(procs)} workers failed (exit status {failed}); "
                            f"run the same command again to resume")


def stop_workers(procs: list[subprocess.Popen], grace: float = 30) -> None:
    """SIGTERM every live worker and wait for it; one still running after ``grace`` seconds is killed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def summary(study: optuna.Study, n_trials: int) -> str:
    by_state = {s.name.lower(): tuning.count(study, (s,)) for s in optuna.trial.TrialState}
    states = ", ".join(f"{n} {s}" for s, n in by_state.items() if n)
    try:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        return f"study {study.study_name}: {states}; best {best.value:.5f} (trial {best.number}): {params}"
    except ValueError:
        return f"study {study.study_name}: {states}; no complete trial yet"


# -------------------------------------------------------------------------------------------- MLflow
def mlflow_trials(args: argparse.Namespace, study: optuna.Study) -> tracking.TrialRuns | None:
    """With ``--mlflow``: the study's MLflow run (the main process finds or makes it, its workers get its id
    through the environment) and the callback that makes each trial a child run of it; else ``None``."""
    args.mlflow_parent = None
    if not args.mlflow:
        return None
    competition = get_competition(args.competition)
    uri = tracking.tracking_uri(args.runs_dir)
    given = os.environ.get(tracking.PARENT_ENV, "") if args.worker_index else ""
    try:
        if given:
            experiment, parent = given.split("/", 1)
        else:
            experiment, parent = tracking.study_run(uri, competition.name, args.study, tuning.mask_url(args.storage),
                                                    study.user_attrs.get("setup") or {})
        args.mlflow_parent = (experiment, parent)
        return tracking.TrialRuns(uri, experiment, parent, competition.metric)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - nothing has run yet: one line, no study session
        raise tracking.store_error(uri, err, f"cannot make the run of study {args.study}") from None


def end_mlflow_study(args: argparse.Namespace, study: optuna.Study, plots: dict, status: str = "FINISHED") -> None:
    """The main process closes the study's MLflow run (best value, plots, status); a store that fails here is
    one line, after the study itself is saved."""
    if not getattr(args, "mlflow_parent", None) or args.worker_index:
        return
    uri = tracking.tracking_uri(args.runs_dir)
    try:
        tracking.end_study_run(uri, args.mlflow_parent[1], study, plots, status)
    except Exception as err:  # noqa: BLE001
        if status != "FINISHED":  # the session is already ending in an error of its own: that one is reported
            return
        raise tracking.store_error(uri, err, f"study {args.study} not closed in MLflow") from None
    if status == "FINISHED":
        print(f"mlflow: study run {args.mlflow_parent[1]} in {tuning.mask_url(uri)}", flush=True)


# ----------------------------------------------------------------------------------------------- CLI
STUDY_DEFAULTS = {"trials": 20, "workers": 1, "pruner": "median", "runs_dir": "runs", "heartbeat_interval": 10,
                  "grace_period": 30, "worker_index": 0}


def add_study_arguments(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The flags of every study, whatever the competition. ``defaults=False``: unset unless given (the
    parser's ``argument_default=SUPPRESS``), for the copy each competition's sub-parser holds."""
    a = parser.add_argument
    a("--trials", type=int_at_least(1), help="finished trials wanted in the study in total (default 20)")
    a("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    a("--study", help="study name (default: the competition)")
    a("--storage", help="sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB "
                        f"(default: ${STORAGE_ENV}, else sqlite file runs/tune/<study>.db)")
    a("--workers", type=int_at_least(1), help="worker processes on this machine (default 1)")
    a("--pruner", choices=tuning.PRUNERS, help="median (default), halving or none")
    a("--best", action="store_true", help="after the study, train the best trial and write a submission")
    a("--runs-dir", help="default storage and plots go to RUNS_DIR/tune (default runs)")
    a("--no-plots", action="store_true", help="skip the PNG plots after the study")
    a("--quiet", action="store_true", help="no per-trial progress lines")
    a("--folds", type=int_at_least(2), help="CV folds (default: the pipeline's)")
    a("--data-dir", help="competition folder (default: the pipeline's)")
    a("--heartbeat-interval", type=int_at_least(1), help="seconds between a running trial's heartbeats (default 10)")
    a("--grace-period", type=int_at_least(1), help="a trial silent this long is failed and retried (default 30)")
    a("--worker-index", type=int_at_least(0), help=argparse.SUPPRESS)
    if defaults:
        parser.set_defaults(**STUDY_DEFAULTS)


def own_parser(competition: Competition) -> argparse.ArgumentParser:
    """The competition's own tune flags alone (``Competition.add_tune_arguments``)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    if competition.add_tune_arguments is not None:
        competition.add_tune_arguments(parser)
    return parser


def takes(parser: argparse.ArgumentParser, flag: str) -> bool:
    """Whether ``parser`` (built with ``exit_on_error=False``) knows ``flag``."""
    try:
        return not parser.parse_known_args([flag])[1]
    except argparse.ArgumentError:  # it knows the flag, which wants a value
        return True


class CompetitionParser(argparse.ArgumentParser):
    """``tune <competition>``: the study's flags and the competition's own.

    A flag it does not take (another competition's, a typo) or a bad value is one ``error:`` line (exit 2)
    naming the competition that takes it, not argparse's usage block. The competition's own flags, as given,
    are kept in ``args.competition_args``: the worker processes get them verbatim.
    """

    def __init__(self, *args, competition: str, study: argparse.ArgumentParser,
                 owners: dict[str, argparse.ArgumentParser], **kwargs):
        super().__init__(*args, **kwargs)
        self.competition, self.study, self.owners = competition, study, owners

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            flag = extras[0].split("=", 1)[0]
            takers = " or ".join(f"tune {name}" for name, own in self.owners.items() if takes(own, flag))
            self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({flag} is for {takers})" if takers else ""))
        namespace.competition_args = self.study.parse_known_args(args)[1]  # what the study's flags leave
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        raise PipelineError(f"tune {self.competition}: {message}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per tunable competition: the study's flags and the competition's own, so ``tune toy``
    knows no leaves ``--epochs``. The study's (and the CLI's common) flags are also taken before the
    competition's name; each sub-parser's copies of them are unset unless given, so they keep that value."""
    add_study_arguments(parser)
    study = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS,
                                    parents=[common_parser(defaults=False)])
    add_study_arguments(study, defaults=False)
    tunable = [c for c in list_competitions() if c.make_objective is not None]
    owners = {c.command: own_parser(c) for c in tunable}
    sub = parser.add_subparsers(dest="competition", required=True, metavar="competition",
                                parser_class=CompetitionParser)
    for c in tunable:
        sub.add_parser(c.command, help=f"{c.name}: {c.direction} {c.metric}", parents=[study, owners[c.command]],
                       competition=c.command, study=study, owners=owners)


def run(args: argparse.Namespace) -> int:
    if args.worker_index:  # a worker of `tune --workers K`: it stops when that process does, even by kill -9
        tuning.die_with_parent(int(os.environ.get(PARENT_ENV) or 0) or None)
    if args.trials < 1 or args.workers < 1:
        raise PipelineError("--trials and --workers must be at least 1")
    if args.grace_period <= args.heartbeat_interval:
        raise PipelineError("--grace-period must be longer than --heartbeat-interval")
    # Optuna's own lines (a failed trial's traceback included) go to the CLI's log file, not the terminal
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    args.study = args.study or args.competition
    from pipelines.core.paths import is_plain_name

    if not is_plain_name(args.study):  # it names runs/tune/<study>.db and runs/tune/<study>/
        raise PipelineError(f"--study {args.study!r} must be a plain name (no folder, no '..'): it names "
                            f"{Path(args.runs_dir) / 'tune'}/<study>.db and its plots' folder")
    objective = make_objective(args)
    validate_inputs(args, objective)  # before any study exists: a typo must not leave a study behind
    args.storage = args.storage or os.environ.get(STORAGE_ENV) or tuning.default_storage_url(args.runs_dir, args.study)
    url = args.storage
    study = open_study(args, objective, url)
    progress = tuning.Progress(args.trials, args.workers, print_fn=lambda s: print(s, flush=True))
    trial_runs = mlflow_trials(args, study)
    hooks = [hook for hook in (None if args.quiet else progress, trial_runs) if hook is not None]
    if not args.quiet:
        print(f"study {args.study} on {tuning.mask_url(url)}: {tuning.count(study, tuning.COUNTED)}/{args.trials} "
              f"trials done, pruner {args.pruner}, {args.workers} worker(s)", flush=True)
    try:
        if args.workers > 1:
            run_workers(args, study, progress)
        else:
            tuning.run_worker(study, objective, args.trials, timeout=args.timeout,
                              on_trial_end=(lambda s, t: [hook(s, t) for hook in hooks]) if hooks else None)
    except KeyboardInterrupt as err:  # a worker stopped with its session: the session says it, in one line
        end_mlflow_study(args, study, {}, status="KILLED")
        if not args.worker_index:
            raise
        return 128 + signal.SIGTERM.value if isinstance(err, Terminated) else 130
    except PipelineError:
        end_mlflow_study(args, study, {}, status="FAILED")
        raise
    except Exception as err:
        end_mlflow_study(args, study, {}, status="FAILED")
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(err, SQLAlchemyError):
            raise tuning.storage_error(url, err) from None
        raise
    if args.worker_index:  # a child: the parent reports
        return 0
    print(summary(study, args.trials), flush=True)
    plots = {}
    if not args.no_plots:
        plots = tuning.save_plots(study, Path(args.runs_dir) / "tune" / args.study)
        if plots:
            print(f"plots: {', '.join(str(p) for p in plots.values())}", flush=True)
    end_mlflow_study(args, study, plots)
    if args.best:
        try:
            best = study.best_trial
        except ValueError:
            raise PipelineError(f"study {args.study!r} has no complete trial to train") from None
        record = {"study": args.study, "trial": best.number,
                  "tuning": {"storage": tuning.mask_url(url), "value": best.value, "params": best.params,
                             "finished_trials": tuning.count(study, tuning.COUNTED), "pruner": args.pruner}}
        out = objective.train_best(best.params, record)
        print(f"best trial {best.number} retrained: CV {out['cv_mean']:.5f}")
        print(f"submission: {out['submission']}")
        tracking.mirror_run(args, out["submission"])  # --mlflow: after the files are written
    if trial_runs is not None and trial_runs.error is not None:
        raise trial_runs.error  # the study and its files are complete; its MLflow mirror is not
    return 0
