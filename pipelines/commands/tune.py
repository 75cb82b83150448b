"""``python -m pipelines tune <competition>``: a pruned, resumable, parallel Optuna study.

The objective is the competition's own (``Competition.make_objective``: its pipeline's shared CV score over
a search space that lives beside the models it tunes, e.g. ``house_prices/estimators.SEARCH_SPACES``,
``leaves/objective.SEARCH_SPACE``). ``--trials N`` is the total
number of finished trials wanted in the study, so re-running the same command resumes a killed session.
``--workers K`` starts K processes on the same study; workers on other machines join by running the
same command with the same ``--storage postgresql://…`` and ``--study``. ``--best`` then trains the
best trial's configuration and writes a submission through the pipeline's normal run path.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from pipelines.competitions import get_competition, list_competitions
from pipelines.core import tuning
from pipelines.core.errors import PipelineError

STORAGE_ENV = "PIPELINES_TUNE_STORAGE"  # the storage URL without putting its password on a command line


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
            "--quiet", "--no-plots"]
    for flag in ("timeout", "folds", "data_dir", "models", "epochs"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for item in getattr(args, "set", None) or []:
        argv += ["--set", item]
    return argv


def run_workers(args: argparse.Namespace, study: optuna.Study, progress: tuning.Progress) -> None:
    """Start K worker processes on the study and print progress until they exit."""
    # the storage URL travels in the environment, not in argv: a password in argv is visible to every local
    # user through ps and /proc
    env = {**os.environ, "PYTHONUNBUFFERED": "1", STORAGE_ENV: args.storage}
    procs = [subprocess.Popen(child_argv(args, i + 1), env=env) for i in range(args.workers)]
    last = None
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            line = progress.line(study)
            if line.split(";")[0] != last:
                last = line.split(";")[0]
                print(line, flush=True)
    except KeyboardInterrupt:
        for p in procs:  # their running trials go stale and are retried by the next session
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise PipelineError(f"{len(failed)} of {len(procs)} workers failed (exit status {failed}); "
                            f"run the same command again to resume")


def summary(study: optuna.Study, n_trials: int) -> str:
    by_state = {s.name.lower(): tuning.count(study, (s,)) for s in optuna.trial.TrialState}
    states = ", ".join(f"{n} {s}" for s, n in by_state.items() if n)
    try:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        return f"study {study.study_name}: {states}; best {best.value:.5f} (trial {best.number}): {params}"
    except ValueError:
        return f"study {study.study_name}: {states}; no complete trial yet"


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("competition", choices=[c.command for c in list_competitions() if c.make_objective is not None])
    a("--trials", type=int, default=20, help="finished trials wanted in the study in total (default 20)")
    a("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    a("--study", default=None, help="study name (default: the competition)")
    a("--storage", default=None, help="sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB "
                                      f"(default: ${STORAGE_ENV}, else sqlite file runs/tune/<study>.db)")
    a("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    a("--pruner", choices=tuning.PRUNERS, default="median", help="median (default), halving or none")
    a("--best", action="store_true", help="after the study, train the best trial and write a submission")
    a("--runs-dir", default="runs", help="default storage and plots go to RUNS_DIR/tune (default runs)")
    a("--no-plots", action="store_true", help="skip the PNG plots after the study")
    a("--quiet", action="store_true", help="no per-trial progress lines")
    a("--folds", type=int, default=None, help="CV folds (default: the pipeline's)")
    a("--data-dir", default=None, help="competition folder (default: the pipeline's)")
    a("--models", default=None, help="house-prices: comma-separated strong models to tune (default all)")
    a("--epochs", type=int, default=None, help="leaves: epochs per fold (default 3, a short tuning budget)")
    a("--set", action="append", metavar="KEY=VALUE",
      help="leaves: fix a LeavesConfig field for every trial, e.g. --set model=resnet18 (repeatable)")
    a("--heartbeat-interval", type=int, default=10, help="seconds between a running trial's heartbeats")
    a("--grace-period", type=int, default=30, help="a trial silent this long is failed and retried")
    a("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.trials < 1 or args.workers < 1:
        raise PipelineError("--trials and --workers must be at least 1")
    if args.grace_period <= args.heartbeat_interval:
        raise PipelineError("--grace-period must be longer than --heartbeat-interval")
    # Optuna's own lines (a failed trial's traceback included) go to the CLI's log file, not the terminal
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    args.study = args.study or args.competition
    objective = make_objective(args)
    validate_inputs(args, objective)  # before any study exists: a typo must not leave a study behind
    args.storage = args.storage or os.environ.get(STORAGE_ENV) or tuning.default_storage_url(args.runs_dir, args.study)
    url = args.storage
    study = open_study(args, objective, url)
    progress = tuning.Progress(args.trials, args.workers, print_fn=lambda s: print(s, flush=True))
    if not args.quiet:
        print(f"study {args.study} on {tuning.mask_url(url)}: {tuning.count(study, tuning.COUNTED)}/{args.trials} "
              f"trials done, pruner {args.pruner}, {args.workers} worker(s)", flush=True)
    try:
        if args.workers > 1:
            run_workers(args, study, progress)
        else:
            tuning.run_worker(study, objective, args.trials, timeout=args.timeout,
                              on_trial_end=None if args.quiet else progress)
    except PipelineError:
        raise
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(err, SQLAlchemyError):
            raise tuning.storage_error(url, err) from None
        raise
    if args.worker_index:  # a child: the parent reports
        return 0
    print(summary(study, args.trials), flush=True)
    if not args.no_plots:
        plots = tuning.save_plots(study, Path(args.runs_dir) / "tune" / args.study)
        if plots:
            print(f"plots: {', '.join(str(p) for p in plots.values())}", flush=True)
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
    return 0
