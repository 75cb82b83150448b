"""Study mechanics shared by every tunable pipeline: storage, sampler, pruner, the worker loop, plots.

Why these choices:
- Storage is always an Optuna ``RDBStorage`` (SQLite file by default, PostgreSQL for several machines)
  with a heartbeat, so a worker killed mid-trial leaves a trial that the next worker marks failed and
  re-enqueues with the same parameters (``RetryHeartbeatStaleTrialCallback``). Nothing else coordinates
  the workers: every decision below reads the study's trials from the storage.
- ``--trials N`` means N *finished* (complete or pruned) trials in the study, not N more: re-running the
  same command resumes. To stop at exactly N with several workers, a trial checks its rank when it
  starts (trial numbers are assigned under a row lock, in creation order): if N trials numbered below it
  are finished, running or queued, it is surplus and is closed as failed (user attr ``surplus``) before
  any work. Without that check K workers overshoot by up to K-1 trials.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipelines.core.errors import PipelineError, mask_secrets, secrets_in

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts
LIVE = (*COUNTED, TrialState.RUNNING, TrialState.WAITING)  # will count unless a worker dies
PRUNERS = ("median", "halving", "none")


class SurplusTrial(Exception):
    """Raised inside a trial that started after the study already had its N trials (a race between workers)."""


# ------------------------------------------------------------------------------------------- storage
def mask_url(url: str) -> str:
    """The URL with its password (and any token) replaced by ``***``: safe to print, log or record."""
    return mask_secrets(url)


def _scrub(message: str, url: str) -> str:
    """First line of a driver error, with the URL and its password masked wherever the driver echoed them."""
    line = (str(message).strip().splitlines() or ["?"])[0]
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001 - unparsable: the text masking alone applies
        password = None
    # the password as the driver parsed it, and as mask_secrets reads it (up to the last '@', in pieces)
    secrets = [str(password)] if password else []
    return mask_secrets(line.replace(url, mask_url(url)), [*secrets, *secrets_in(url)])


def storage_error(url: str, err: BaseException) -> PipelineError:
    """A one-line error naming the storage (password masked) and the driver's reason."""
    reason = getattr(err, "orig", None) or err  # sqlalchemy wraps the driver's exception
    return PipelineError(f"cannot use storage {mask_url(url)}: {type(reason).__name__}: {_scrub(reason, url)}")


def open_storage(url: str, *, heartbeat_interval: int = 10, grace_period: int = 30,
                 max_retry: int = 3) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; killed trials are failed and retried (``max_retry`` times)."""
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")):
        raise PipelineError(f"--storage {mask_url(url)}: expected sqlite:///FILE or postgresql://USER@HOST:PORT/DB")
    # heartbeats and their retry callback are "experimental" in Optuna; they are what resuming relies on
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine_kwargs: dict = {}
    if url.startswith("sqlite:"):
        # several local workers share the file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        )
    except Exception as err:  # noqa: BLE001 - bad URL, missing driver, unreachable server: one line
        raise storage_error(url, err) from None


def default_storage_url(runs_dir: str | Path, study: str, create: bool = True) -> str:
    """``sqlite:///RUNS_DIR/tune/<study>.db`` (absolute); its folder is made only with ``create``."""
    path = Path(runs_dir) / "tune" / f"{study}.db"
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def normalise_setup(setup: dict, default_data: Path | None = None) -> dict:
    """A study's identity with its paths made comparable: ``data/x/``, ``./data/x`` and ``/abs/data/x`` are
    one folder, and no ``--data-dir`` is the competition's ``default_data`` folder when that one holds the data."""
    out = dict(setup)
    for key, value in setup.items():
        if key == "data_dir" and value is None:
            if default_data is not None and (default_data / "train.csv").is_file():
                out[key] = str(default_data.resolve())
        elif (key.endswith(("_dir", "_file", "_path"))) and isinstance(value, str) and value:
            out[key] = str(Path(value).expanduser().resolve())
    return out


def tuning_param_names(build: Callable) -> list[str]:
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


def parse_overrides(items: list[str] | None, cls) -> dict:
    """``--set KEY=VALUE`` pairs converted to the config dataclass field's type (bool: true/false/1/0).

    Lets a study fix any field of a pipeline's config for every trial without a flag per field."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in fields:
            raise PipelineError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        current = getattr(defaults, key)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1")
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
                if not math.isfinite(value):  # nan or inf would only fail deep inside the first trial
                    raise ValueError(raw)
            elif current is None and raw.lstrip("-").isdigit():
                value = int(raw)
            else:
                value = None if raw.lower() == "none" else raw
        except ValueError:
            kind = "finite number" if isinstance(current, float) else type(current).__name__
            raise PipelineError(f"--set {item!r}: {raw!r} is not a valid {kind}") from None
        out[key] = value
    return out


# ----------------------------------------------------------------------------------- sampler, pruner
def make_pruner(name: str, n_startup_trials: int = 5) -> optuna.pruners.BasePruner:
    """``median``: stop a trial whose running CV is worse than the median of earlier trials at that fold;
    ``halving``: asynchronous successive halving over the same steps; ``none``: never prune."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise PipelineError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def make_sampler(seed: int, n_existing: int, worker: int) -> optuna.samplers.BaseSampler:
    """TPE whose seed differs per worker and per resume: otherwise two workers (or a resumed session)
    would draw the same start-up parameters again. ``constant_liar`` keeps parallel workers apart."""
    mixed = (seed * 1_000_003 + n_existing * 10_007 + worker) % 2**32
    return optuna.samplers.TPESampler(seed=mixed, constant_liar=True, multivariate=True)


# --------------------------------------------------------------------------------------- the worker
def count(study: optuna.Study, states) -> int:
    return sum(t.state in states for t in study.get_trials(deepcopy=False))


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int, *,
               timeout: float | None = None, poll: float = 2.0,
               on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> None:
    """Run trials until the study holds ``n_trials`` finished ones (or ``timeout`` seconds passed).

    When the last trials are running in other workers this one waits for them, because one of them may
    die: its heartbeat goes stale, it is re-enqueued, and whoever is still alive runs it.
    """
    start = time.monotonic()
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def guarded(trial: optuna.Trial) -> float:
        earlier = [t for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
        if len(earlier) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {n_trials} trials")
        trial.set_user_attr("worker", worker)  # which machine and process ran it: for 2-worker figures
        return objective(trial)

    callbacks = [on_trial_end] if on_trial_end else []
    while True:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in COUNTED for t in trials)
        live = sum(t.state in LIVE for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if done >= n_trials or (timeout is not None and time.monotonic() - start >= timeout):
            return
        if live >= n_trials and not waiting:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry
            time.sleep(poll)
            continue
        study.optimize(guarded, n_trials=1, catch=(SurplusTrial,), callbacks=callbacks, gc_after_trial=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int | None = None) -> bool:
    """Have Linux send this process SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``): a worker of
    ``tune --workers K`` then stops with its session even after a ``kill -9`` of it, instead of running the
    study on as an orphan (under the CLI SIGTERM is a clean Ctrl-C: its running trial is failed). ``parent``:
    the pid that started this process; if it is already gone (it died before this call), stop now. Returns
    whether the request was made: elsewhere it does nothing, and the parent still stops its workers on
    Ctrl-C, SIGTERM and errors (``tune.stop_workers``)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


# ------------------------------------------------------------------------------------------ reporting
class Progress:
    """One line per finished trial: trials done of N, best value, ETA from this session's pace."""

    def __init__(self, n_trials: int, workers: int = 1, print_fn: Callable[[str], None] = print):
        self.n_trials, self.workers, self.print = n_trials, workers, print_fn
        self.start = time.monotonic()
        self.done_at_start: int | None = None

    def line(self, study: optuna.Study) -> str:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in COUNTED for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus") for t in trials)
        if self.done_at_start is None:
            self.done_at_start = done
        elapsed = time.monotonic() - self.start
        new = done - self.done_at_start
        eta = "?" if new <= 0 else _duration(elapsed / new * max(0, self.n_trials - done))
        try:
            best = f"best {study.best_value:.5f} (trial {study.best_trial.number})"
        except ValueError:
            best = "best -"
        extra = "".join(f", {n} {what}" for n, what in ((pruned, "pruned"), (running, "running"),
                                                        (failed, "failed")) if n)
        return f"trials {done}/{self.n_trials}{extra}; {best}; elapsed {_duration(elapsed)}, ETA {eta}"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> None:
        self.print(self.line(study))


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def save_plots(study: optuna.Study, folder: Path) -> dict[str, Path]:
    """Optimization history, parameter importances and intermediate values as PNG (matplotlib backend:
    plotly is not a dependency). A plot that cannot be drawn yet (e.g. too few trials) is skipped."""
    from optuna.visualization import matplotlib as ovm

    from pipelines.core.plots import pyplot

    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    plots = {"history": ovm.plot_optimization_history, "importances": ovm.plot_param_importances,
             "intermediate": ovm.plot_intermediate_values}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written[name] = path
        except Exception:  # noqa: BLE001, S112 - a missing plot must not fail a finished study
            continue
    return written
