"""Classify Leaves tuning: the search space over ``LeavesConfig`` and the objective ``tune leaves`` runs.

Kept beside ``pipeline.py`` (whose owner changes it often) and built only on its public pieces:
``load_data`` once per process, then per trial the shared fold splitter and CV driver around
``fit_fold``. The value is the CV accuracy. After every epoch the trial reports the running CV (the
finished folds' accuracies and the current fold's validation accuracy so far, averaged) at step
``fold * epochs + epoch``, so a pruner can stop a bad trial in its first fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import optuna

from pipelines.core.errors import PipelineError
from pipelines.core.records import RunRecord
from pipelines.core.tuning import parse_overrides, tuning_param_names

# name in the study -> (LeavesConfig field, suggest) ; ranges around the preset's fine-tuning defaults
SEARCH_SPACE: Callable[[optuna.Trial], dict] = lambda t: {  # noqa: E731
    "lr": t.suggest_float("lr", 1e-4, 3e-3, log=True),
    "weight_decay": t.suggest_float("weight_decay", 1e-3, 0.1, log=True),
    "label_smoothing": t.suggest_float("label_smoothing", 0.0, 0.2),
    "mix_prob": t.suggest_float("mix_prob", 0.0, 0.6),
    "crop_scale": t.suggest_float("crop_scale", 0.3, 0.9),
}


class LeavesObjective:
    """One trial = the leaves recipe with the trial's hyperparameters, K-fold CV accuracy (maximized)."""

    direction = "maximize"

    def __init__(self, args: argparse.Namespace):
        from pipelines.competitions.leaves.config import LeavesConfig

        self.trials_dir = Path(args.runs_dir) / "tune" / args.study / "trials"
        base = LeavesConfig(folds=args.folds or 3, epochs=args.epochs or 3, data_dir=args.data_dir, seed=args.seed,
                            out_dir=args.out_dir, progress=False, runs_dir=args.runs_dir)
        self.base = dataclasses.replace(base, **parse_overrides(args.set, LeavesConfig))
        self.data = None

    @property
    def setup(self) -> dict:
        fixed = {k: v for k, v in dataclasses.asdict(self.base).items()
                 if k not in ("out_dir", "runs_dir", "progress", "workers", "resume")}
        return {"competition": "leaves", **fixed}

    def check_inputs(self, args: argparse.Namespace) -> None:
        """The settings, and the data (read with the pipeline's own checks) when a folder is given."""
        from pipelines.competitions.leaves.config import check_config
        from pipelines.competitions.leaves.data import read_table
        from pipelines.core.cv import make_folds

        if args.epochs is not None and args.epochs < 1:  # 0 must not silently mean the default
            raise PipelineError(f"--epochs must be at least 1, got {args.epochs}")
        check_config(self.base)
        if args.data_dir is not None:
            root = Path(args.data_dir)
            if not root.is_dir():
                raise PipelineError(f"--data-dir not found: {root}")
            train = read_table(root / "train.csv", ["image", "label"])
            read_table(root / "test.csv", ["image"])
            make_folds(len(train), self.base.folds)

    def config(self, trial):
        return dataclasses.replace(self.base, **SEARCH_SPACE(trial))

    def defaults(self) -> dict:
        return {name: getattr(self.base, name) for name in tuning_param_names(self.config)}

    def __call__(self, trial: optuna.Trial) -> float:
        from pipelines.competitions.leaves.data import load_data
        from pipelines.competitions.leaves.train import fit_fold
        from pipelines.core.cv import cross_validate, make_folds
        from pipelines.core.distributed import default_device
        from pipelines.core.metrics import accuracy

        cfg = self.config(trial)
        device = default_device()
        if self.data is None:  # decode the images once per process, not once per trial
            self.data = load_data(cfg, device)
        data = self.data
        folds = make_folds(data.y, cfg.folds, strategy="stratified", seed=cfg.seed)
        run_dir = self.trials_dir / f"trial{trial.number}"

        done: list[float] = []  # accuracies of the finished folds

        def fit_predict(train_idx, valid_idx, fold):
            def on_epoch(epoch: int, val_acc: float) -> None:
                running = (sum(done) + val_acc) / (len(done) + 1)
                trial.report(running, fold * cfg.epochs + epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"fold {fold} epoch {epoch}: running accuracy {running:.4f}")

            info = fit_fold(cfg, data, fold, train_idx, valid_idx, run_dir, device, on_epoch=on_epoch)
            done.append(accuracy(data.y[valid_idx], info["valid"]))
            return info["valid"], None

        try:
            result = cross_validate(fit_predict, folds, data.y, accuracy)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a finished trial are not needed again
        return result.mean

    def train_best(self, params: dict, extra_record: dict) -> dict:
        """The normal leaves run with the best parameters; the study and trial go into its run record."""
        from pipelines.competitions.leaves.pipeline import run_config

        cfg = dataclasses.replace(self.config(optuna.trial.FixedTrial(params)), progress=True,
                                  extra_record=extra_record)
        files = run_config(cfg)
        if files is None:
            raise PipelineError("the leaves run wrote no record (not the main process)")
        return {"cv_mean": RunRecord.read(files.record).cv_mean, "submission": files.submission}
