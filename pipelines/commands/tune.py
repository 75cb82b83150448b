"""``python -m pipelines tune {house-prices,leaves}``: a pruned, resumable, parallel Optuna study.

The objective is the pipeline's own shared CV score; the search spaces live next to the models they
tune (``house_prices/estimators.SEARCH_SPACES``, ``leaves/objective.SEARCH_SPACE``). ``--trials N`` is the total
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
from dataclasses import replace
from pathlib import Path

import optuna

from pipelines.core import tuning
from pipelines.core.errors import PipelineError

COMPETITIONS = ("house-prices", "leaves")
STORAGE_ENV = "PIPELINES_TUNE_STORAGE"  # the storage URL without putting its password on a command line
_FEATURE_CACHES: dict[tuple, dict] = {}


# ---------------------------------------------------------------------------------------- objectives
class HousePricesObjective:
    """Tunes every selected strong model's parameters in one trial; the value is the stack's CV.

    One trial covers all models because the score that matters (and that ``--best`` reproduces) is the
    stack's cross-fitted CV on every training row, the preset's own headline. Pruning steps are (model,
    fold) in a fixed order, so every trial reports the same model's running CV at the same step and the
    pruner compares like with like.
    """

    direction = "minimize"

    def __init__(self, args: argparse.Namespace):
        from pipelines.competitions.house_prices.estimators import model_names
        from pipelines.competitions.house_prices.pipeline import HousePricesConfig

        models = model_names(args.models.split(",") if args.models else None)
        self.base = HousePricesConfig(preset="strong", folds=args.folds or 5, seed=args.seed, data_dir=args.data_dir,
                                      out_dir=args.out_dir, models=models, progress=False)
        # per-fold preprocessing depends only on data and folds: shared by every trial (and study) in a process
        self.feature_cache = _FEATURE_CACHES.setdefault((args.data_dir, self.base.folds, self.base.repeats,
                                                         args.seed), {})

    @property
    def setup(self) -> dict:
        """What makes two trials comparable: a study refuses to mix trials from different setups."""
        from pipelines.competitions.house_prices.pipeline import outlier_policy

        return {"competition": "house-prices", "folds": self.base.folds, "repeats": self.base.repeats,
                "seed": self.base.seed, "models": self.base.models, "data_dir": self.base.data_dir,
                "scored": "all rows", "outliers": outlier_policy(self.base)}

    def config(self, trial: optuna.Trial | optuna.trial.FixedTrial):
        from pipelines.competitions.house_prices.estimators import SEARCH_SPACES

        return replace(self.base, params={name: SEARCH_SPACES[name](trial) for name in self.base.models})

    def defaults(self) -> dict:
        """The preset's own parameters in the search space's names: trial 0, so the study starts from them."""
        from pipelines.competitions.house_prices.estimators import STRONG_MODELS

        names = tuning_param_names(self.config)
        return {n: STRONG_MODELS[n.split(".")[0]][1][n.split(".", 1)[1]] for n in names
                if n.split(".", 1)[1] in STRONG_MODELS[n.split(".")[0]][1]}

    def __call__(self, trial: optuna.Trial) -> float:
        from pipelines.competitions.house_prices.pipeline import run_pipeline

        cfg = replace(self.config(trial), test_pred="average")  # the CV is the same; skip the refit
        step = {name: i * cfg.folds * cfg.repeats for i, name in enumerate(cfg.models)}

        def on_fold_end(name: str, fold: int, running_cv: float) -> None:
            trial.report(running_cv, step[name] + fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{name} fold {fold}: running CV {running_cv:.5f}")

        out = run_pipeline(cfg, write=False, on_fold_end=on_fold_end, feature_cache=self.feature_cache)
        trial.set_user_attr("models", {n: round(m["cv_mean"], 6) for n, m in out["models"].items()})
        trial.set_user_attr("weights", {n: round(m["weight"], 4) for n, m in out["models"].items()})
        return out["cv_mean"]

    def train_best(self, params: dict, extra_record: dict) -> dict:
        from pipelines.competitions.house_prices.pipeline import run_pipeline

        cfg = replace(self.config(optuna.trial.FixedTrial(params)), progress=True, extra_record=extra_record)
        out = run_pipeline(cfg)
        return {"cv_mean": out["cv_mean"], "submission": out["files"].submission}


def tuning_param_names(build) -> list[str]:
    """The parameter names a config builder suggests, found by running it on a recording trial."""

    class Recorder:
        def __init__(self):
            self.names: list[str] = []

        def _record(self, name, low=None, *args, **kwargs):
            self.names.append(name)
            return low

        suggest_float = suggest_int = _record

        def suggest_categorical(self, name, choices):
            self.names.append(name)
            return choices[0]

    recorder = Recorder()
    build(recorder)
    return recorder.names


def make_objective(args: argparse.Namespace):
    if args.competition == "house-prices":
        return HousePricesObjective(args)
    from pipelines.competitions.leaves.objective import LeavesObjective

    return LeavesObjective(args)


# ------------------------------------------------------------------------------------------- studies
def validate_inputs(args: argparse.Namespace, objective) -> None:
    """Everything a study's first trial would trip on, checked before any study or storage file exists:
    the data (read with the pipeline's own checks), the folds for its rows, the settings, the folders."""
    from pipelines.core.cv import make_folds
    from submissions.writer import check_writable_dir

    if args.folds is not None and args.folds < 2:  # 0 must not silently mean the default
        raise PipelineError(f"--folds must be at least 2, got {args.folds}")
    if args.competition == "house-prices":
        from pipelines.competitions.house_prices.pipeline import load

        train, _ = load(args.data_dir)
        make_folds(len(train), args.folds or 5)  # refuses too few rows for the folds
    else:
        from pipelines.competitions.leaves.pipeline import check_config, read_table

        if args.epochs is not None and args.epochs < 1:  # 0 must not silently mean the default
            raise PipelineError(f"--epochs must be at least 1, got {args.epochs}")
        check_config(objective.base)
        if args.data_dir is not None:
            root = Path(args.data_dir)
            if not root.is_dir():
                raise PipelineError(f"--data-dir not found: {root}")
            train = read_table(root / "train.csv", ["image", "label"])
            read_table(root / "test.csv", ["image"])
            make_folds(len(train), objective.base.folds)
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
    setup = tuning.normalise_setup(objective.setup)
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
    if saved is not None and tuning.normalise_setup(saved) != setup:
        saved = tuning.normalise_setup(saved)
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
    a("competition", choices=COMPETITIONS)
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
