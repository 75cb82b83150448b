"""Classify Leaves: fine-tune a pretrained backbone with stratified K-fold CV, TTA and a validated submission.

The recipe: load (CSV + images, decoded once into a uint8 cache, at a size chosen from the model and the
data) -> stratified folds (the shared splitter) -> per fold, the flips and turns its training rows keep
(``views.py``: a linear probe on frozen features, never assumed) -> fit (the shared training loop:
batched augmentation on the device, EMA, warmup+cosine, a checkpoint every epoch, a number of epochs
chosen from the data size) -> predict the fold's rows and the test set once, in every kept view -> keep
the views that improve the out-of-fold score (chosen on the other folds' rows) -> write (the shared
writer: submission, run record, OOF and test probabilities, curves and confusion matrix).

Honest CV: no fold is scored by weights or symmetries chosen on it. By default every fold trains a fixed
number of epochs and is scored once, at the last one; with ``--patience N`` the epoch is early-stopped on an
inner split of the training folds. The record's ``epoch_choice`` says which.

Works on any folder in the Kaggle layout (``images/``, ``train.csv`` with ``image,label``, ``test.csv``
with ``image``). Without ``--data-dir`` it uses ``data/classify-leaves/``, else downloads it when Kaggle
credentials are set up, else generates a synthetic leaf set (``pipelines.competitions.leaves.leafgen``).
Under ``torchrun`` every rank trains its shard (DDP) and rank 0 writes all files.

This module is the entry (``run``: the run folder, the data, the fold loop, the TTA choice, the write; the
CLI also reads ``add_arguments`` here). Each step has its own file beside it: the settings and
flags in ``config.py``, the data and image size in ``data.py``, one fold's training in ``train.py``, the
flips and turns per fold and the test-time view choice in ``views.py`` (the probe test itself:
``features/symmetry.py``), and the submission, figures and run record in ``record.py``.
"""


from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.competitions.leaves import data as leaf_data  # load_data is looked up there (tests patch it)
from pipelines.competitions.leaves.config import (  # noqa: F401  (add_arguments: the CLI reads it here)
    LeavesConfig,
    add_arguments,
    auto_batch_size,
    auto_fold_jobs,
    check_compile,
    check_config,
    config_from_args,
    say,
)
from pipelines.competitions.leaves.data import LeafData
from pipelines.competitions.leaves.record import write_leaves_run
from pipelines.competitions.leaves.train import fit_fold, predict_tests
from pipelines.core import tracking
from pipelines.core.errors import PipelineError
from pipelines.core.metrics import accuracy  # the competition's metric
from pipelines.core.records import dumps

if TYPE_CHECKING:
    import torch

    from submissions.writer import RunFiles


# flags a resumed run takes from the command line (they change where it writes or how it reports, not what
# it trains); every other flag given with --resume must match the saved config
RESUME_FREE = ("progress", "workers", "resume", "out_dir", "runs_dir")
# settings added after runs were saved without them, with the value those runs trained with (the new
# default may differ: a run saved before --head-init started its heads at zero)
SAVED_BEFORE = {"head_init": "zero"}


def open_run_dir(cfg: LeavesConfig) -> tuple[LeavesConfig, Path]:
    """A new run folder's path (created once the data has loaded), or the run ``--resume`` names and
    its saved config."""
    base = Path(cfg.runs_dir) / "leaves"
    if cfg.resume:
        from pipelines.core.paths import inside

        run_dir = Path(cfg.resume) if Path(cfg.resume).is_dir() else inside(base, cfg.resume, "--resume")
        if not (run_dir / "config.json").is_file():
            raise PipelineError(f"--resume: no run at {run_dir} (expected a config.json there)")
        saved = {**SAVED_BEFORE, **json.loads((run_dir / "config.json").read_text())}
        given = {k: v for k, v in dataclasses.asdict(cfg).items()
                 if k not in RESUME_FREE and v != getattr(LeavesConfig(), k) and v != saved.get(k)}
        if given:  # a flag the saved run cannot honour is refused, never silently dropped
            name, value = next(iter(given.items()))
            flag = "--" + name.replace("_", "-")
            raise PipelineError(f"--resume continues {run_dir.name} with its saved settings: {flag} "
                                f"{value} differs from its {saved.get(name)!r}; start a new run to change it")
        keep = {k: getattr(cfg, k) for k in RESUME_FREE}
        return LeavesConfig(**{**saved, **keep}), run_dir
    from pipelines.core.distributed import broadcast_object

    name = broadcast_object(f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}_{cfg.model}_seed{cfg.seed}")  # rank 0's name
    return cfg, base / name


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    tracking.mirror_run(args, run_config(cfg))  # --mlflow: after the files are written (rank 0's)
    return 0


def run_config(cfg: LeavesConfig) -> RunFiles | None:
    """The whole run; returns the paths it wrote (``None`` on the ranks other than 0, which write nothing)."""
    from pipelines.core.cv import make_folds
    from pipelines.core.distributed import is_main_process

    t0 = time.perf_counter()
    cfg, run_dir, device, data, weights = prepare_run(cfg)
    load_seconds = time.perf_counter() - t0
    folds = make_folds(data.y, cfg.folds, strategy="stratified", seed=cfg.seed)
    result, fold_info, tta = cross_validate_folds(cfg, data, folds, run_dir, device)
    if not is_main_process():
        return None
    files = write_leaves_run(cfg, data, folds, result, fold_info, tta, weights=weights, device=device,
                             run_dir=run_dir, started=t0, load_seconds=load_seconds)
    print(f"submission: {files.submission}", flush=True)
    return files


def prepare_run(cfg: LeavesConfig) -> tuple[LeavesConfig, Path, torch.device, LeafData, dict]:
    """Everything before training: the process group, the run folder (saved config on ``--resume``), the
    checks, the seed, the starting weights' origin (fails before the data loads) and the data."""
    from models.pretrained import weights_record
    from pipelines.core.distributed import default_device, init_distributed, is_main_process, world
    from pipelines.core.seed import set_seed

    init_distributed()
    cfg, run_dir = open_run_dir(cfg)
    check_config(cfg)
    set_seed(cfg.seed)
    device = default_device()
    cfg = auto_batch_size(cfg, device)  # resolved before config.json is saved: a resume keeps it
    if cfg.fold is not None and not 0 <= cfg.fold < cfg.folds:
        raise PipelineError(f"--fold {cfg.fold} is outside 0..{cfg.folds - 1}")
    weights = weights_record(cfg.model, cfg.pretrained, cfg.pretrained_file)  # fails before data loads
    check_compile(cfg, device)  # likewise: a CPU compile without a C++ compiler
    data = leaf_data.load_data(cfg, device)  # through its module: a test's monkeypatch takes effect
    cfg = auto_fold_jobs(cfg, device, len(data.train))  # saved below too: a fold's arithmetic depends on it
    if is_main_process():
        from pipelines.core.files import atomic_write

        run_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (("config.json", dataclasses.asdict(cfg)), ("classes.json", {"classes": data.classes})):
            with atomic_write(run_dir / name) as fh:  # whole or absent (a resume trusts config.json)
                fh.write(dumps(content))
    say(f"{len(data.train)} train / {len(data.test)} test images, {len(data.classes)} classes, "
        f"{data.img_size} px, batch {cfg.batch_size}, {cfg.model} on {device} x{world()[1]}"
        f"{', compiled' if cfg.compile else ''}{f', {cfg.fold_jobs} folds at once' if cfg.fold_jobs > 1 else ''}"
        f"; run {run_dir}")
    return cfg, run_dir, device, data, weights


def cross_validate_folds(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, run_dir: Path, device):
    """Train every fold (or ``--fold`` alone), choose the test-time views cross-fitted on the OOF rows, then
    predict the test set with each fold's weights in the views chosen (only those).

    Returns the CV result (OOF and test probabilities in the chosen views, per-fold accuracy), each fold's
    :func:`fit_fold` output, and the view choice (:func:`choose_tta`).
    """
    from features.symmetry import summary
    from pipelines.competitions.leaves.fold_jobs import FoldProcesses
    from pipelines.competitions.leaves.views import choose_tta
    from pipelines.core.cv import cross_validate

    fold_info: dict[int, dict] = {}
    jobs = cfg.fold_jobs or 1
    processes = FoldProcesses(cfg, data, run_dir, jobs, device) if jobs > 1 else None

    def fit_predict(train_idx, valid_idx, fold):
        if processes is not None:
            info = processes.fit(fold, train_idx, valid_idx)
        else:
            info = fit_fold(cfg, data, fold, train_idx, valid_idx, run_dir, device)
        fold_info[fold] = info
        say(f"fold {fold}: accuracy {accuracy(data.y[valid_idx], info['valid']):.4f} "
            f"(weights of epoch {info['epoch_used']} of {info['epochs']}, {info['train_seconds']:.0f} s training, "
            f"flips/turns: {info['symmetry'].describe()})")
        return info["valid"], None

    with processes or contextlib.nullcontext():
        result = cross_validate(fit_predict, folds, data.y, accuracy, n_jobs=jobs,
                                only_folds=None if cfg.fold is None else [cfg.fold])
        fold_info = dict(sorted(fold_info.items()))  # folds trained side by side finish in any order
        say(summary({k: (info["symmetry"], info["symmetry_record"]) for k, info in fold_info.items()}))
        trained = np.isin(folds, sorted(fold_info))
        tta = choose_tta({k: info["valid_views"] for k, info in fold_info.items()}, data.y[trained], folds[trained])
        tta["views_tried"] = {k: info["views"] for k, info in fold_info.items()}
        views = {k: info["views"][: tta["test"]] for k, info in fold_info.items()}
        tests = (processes.predict_tests(views) if processes is not None
                 else predict_tests(cfg, data, views, run_dir, device))
    result.oof[trained] = tta["oof"]
    result.fold_scores = [accuracy(data.y[folds == k], result.oof[folds == k]) for k in sorted(fold_info)]
    result.test = np.mean([tests[k].mean(0) for k in fold_info], axis=0)
    say("test-time views by OOF accuracy: " + ", ".join(f"{k}: {a:.4f}" for k, a in tta["oof_accuracy"].items())
        + f"; the test set uses {tta['test']}")
    say("fold accuracies: " + ", ".join(f"{k}: {s:.4f}" for k, s in zip(sorted(fold_info), result.fold_scores,
                                                                         strict=True)))
    say(f"cv accuracy: {result.mean:.4f} +- {result.std:.4f}")
    return result, fold_info, tta
