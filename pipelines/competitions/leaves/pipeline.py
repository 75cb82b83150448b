"""Classify Leaves: fine-tune a pretrained backbone with stratified K-fold CV, TTA and a validated submission.

The recipe: load (CSV + images, decoded once, at a size chosen from the model and the data) -> stratified
folds (the shared splitter) -> fit per fold (the shared training loop: augmentation, EMA, warmup+cosine, a
checkpoint every epoch) -> predict every test-time view -> keep the views that improve the out-of-fold
score (chosen on the other folds' rows) -> write (the shared writer: submission, run record, OOF
and test probabilities, curves and confusion matrix).

Honest CV: no fold is scored by weights chosen on it. By default every fold trains a fixed number of
epochs and is scored at the last one; with ``--patience N`` the epoch is early-stopped on an inner split
of the training folds. The record's ``epoch_choice`` says which.

Works on any folder in the Kaggle layout (``images/``, ``train.csv`` with ``image,label``, ``test.csv``
with ``image``). Without ``--data-dir`` it uses ``data/classify-leaves/``, else downloads it when Kaggle
credentials are set up, else generates a synthetic leaf set (``pipelines.competitions.leaves.leafgen``).
Under ``torchrun`` every rank trains its shard (DDP) and rank 0 writes all files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from pipelines.competitions.leaves import COMPETITION as LEAVES
from pipelines.core.blending import accuracy  # the competition's metric
from pipelines.core.errors import PipelineError
from pipelines.core.records import REPO_ROOT, RunRecord, dumps

if TYPE_CHECKING:
    import torch

    from submissions.writer import RunFiles, SubmissionSpec

COMPETITION, DEFAULT_DATA = LEAVES.name, LEAVES.default_data  # registered once, in this package's __init__
# CPU image size: the images' median side, small images upsampled to at least 96 px (efficientnet-lite0 at
# 64 px ends in 2x2 feature maps and loses ~8 points on small real images), large ones capped at 112 px
# (the 2-core CPU budget: 3 folds x 10 epochs of 2,000 images in about 20 min)
CPU_SIZES = (96, 112)


@dataclass
class LeavesConfig:
    """Every setting of a run; CLI flags override the defaults and the resolved config is saved."""

    data_dir: str | None = None
    model: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # offline ImageNet weights (models/pretrained.py) when the backbone has them
    pretrained_file: str | None = None
    img_size: int | None = None  # None: 224 on CUDA; on CPU the images' median side within CPU_SIZES
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    head_lr_mult: float = 1.0  # classifier LR / body LR (x10 measured no better once the head starts at zero)
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    mixup: float = 0.2  # mixup alpha (0 disables)
    cutmix: float = 1.0  # cutmix alpha (0 disables)
    # augmentation for ~10 epochs over a few thousand images: light (crops, flips). The strong policy
    # (--auto-augment trivial --mix-prob 0.2 --rotation 30 --jitter 0.3 --crop-scale 0.5) scored 2 points
    # lower on real ELPV cells at this budget; it pays off only over much longer schedules
    mix_prob: float = 0.0  # share of batches mixed (mixup/cutmix)
    auto_augment: str = "none"
    crop_scale: float = 0.7  # smallest area share kept by the random resized crop
    rotation: float = 0.0  # random rotation, degrees
    jitter: float = 0.0  # colour jitter (brightness, contrast, saturation)
    ema_decay: float = 0.995  # 0 disables the EMA of weights
    patience: int = 0  # 0: fixed epochs, scored at the last; N: early stopping on an inner split of the train folds
    folds: int = 3
    fold: int | None = None  # train only this fold
    tta: int = 4  # test-time views tried: 1 none, 2 + horizontal flip, 3 + vertical flip, 4 + both; kept on OOF
    workers: int = -1  # -1: 0 on small CPUs, else up to 8
    compile: bool = False
    amp: bool = True  # autocast: bf16 on a CPU with hardware bf16 (AVX-512 BF16/AMX), bf16/fp16 on CUDA
    progress: bool = True
    seed: int = 0
    out_dir: str = "submissions"
    runs_dir: str = "runs"
    resume: str | None = None
    synthetic_species: int = 10
    synthetic_train: int = 960
    synthetic_test: int = 240
    synthetic_size: int = 96
    extra_record: dict = dataclasses.field(default_factory=dict)  # merged into the run record (tuning study/trial)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LeavesConfig()
    a = parser.add_argument
    a("--data-dir", help="folder in the Kaggle layout (default: data/classify-leaves, Kaggle, or synthetic)")
    a("--model", default=d.model, help=f"models/ or timm backbone name (default {d.model})")
    a("--no-pretrained", dest="pretrained", action="store_false", help="train from scratch")
    a("--pretrained-file", help="local weights (.pth/.safetensors) to start from")
    a("--img-size", type=int, help="training resolution (default: 224 on CUDA, the images' median side within "
                                   f"{CPU_SIZES[0]}..{CPU_SIZES[1]} on CPU; never below the model's minimum)")
    for name in ("epochs", "batch_size", "patience", "folds", "tta", "workers"):
        a(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr", "head_lr_mult", "weight_decay", "warmup_epochs", "grad_clip", "label_smoothing", "mixup",
                 "cutmix", "mix_prob", "crop_scale", "rotation", "jitter", "ema_decay"):
        a(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    a("--auto-augment", default=d.auto_augment, choices=["trivial", "rand", "imagenet", "none"])
    a("--fold", type=int, help="train only this fold")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--no-amp", dest="amp", action="store_false", help="plain fp32 (no bf16/fp16 autocast)")
    a("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    a("--runs-dir", default=d.runs_dir, help="checkpoints go to RUNS_DIR/leaves/<run> (default runs)")
    a("--resume", help="continue a killed run: its name under RUNS_DIR/leaves, or its folder")
    for name in ("species", "train", "test", "size"):
        a(f"--synthetic-{name}", type=int, default=getattr(d, f"synthetic_{name}"), help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> LeavesConfig:
    fields = {f.name for f in dataclasses.fields(LeavesConfig)}
    return LeavesConfig(**{k: v for k, v in vars(args).items() if k in fields})


def check_config(cfg: LeavesConfig) -> None:
    """Refuse settings that cannot train, and output folders that cannot be written, before any work and
    before a run folder exists."""
    from submissions.writer import check_writable_dir

    for name, low in (("epochs", 1), ("batch_size", 1), ("folds", 2), ("tta", 1)):
        if getattr(cfg, name) < low:
            raise PipelineError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(cfg, name)}")
    if cfg.tta > 4:
        raise PipelineError(f"--tta must be 1 to 4 views, got {cfg.tta}")
    if cfg.img_size is not None and cfg.img_size < 16:
        raise PipelineError(f"--img-size must be at least 16 pixels, got {cfg.img_size} "
                            "(leave it out for the automatic size)")
    if not cfg.resume:
        import timm

        import models

        if cfg.model not in models.list_models() and not timm.is_model(cfg.model):
            models.create_model(cfg.model)  # unknown: its one-line error lists close matches
    check_writable_dir(Path(cfg.out_dir) / COMPETITION)
    check_writable_dir(cfg.runs_dir, "--runs-dir")


# ----------------------------------------------------------------------------------------------- data
@dataclass
class LeafData:
    """The training and test tables, the decoded images and the encoded labels."""

    root: Path
    source: str
    train: pd.DataFrame
    test: pd.DataFrame
    classes: list[str]
    y: np.ndarray
    train_images: list
    test_images: list
    img_size: int


def resolve_data_dir(cfg: LeavesConfig) -> tuple[Path, str]:
    """The folder to read and where it came from: given, local, kaggle or synthetic."""
    if cfg.data_dir:
        root = Path(cfg.data_dir)
        if not root.is_dir():
            raise PipelineError(f"--data-dir not found: {root}")
        return root, "given"
    if (DEFAULT_DATA / "train.csv").is_file():
        return DEFAULT_DATA, "local"
    from pipelines.core import kaggle_client

    creds = kaggle_client.find_credentials()  # the same discovery as `submit`
    if creds is not None:
        from pipelines.core.distributed import barrier, is_main_process

        if is_main_process():
            say(f"downloading {COMPETITION} with the kaggle client ({creds.describe()}) into {DEFAULT_DATA}")
            kaggle_client.download(LEAVES.kaggle_slug, DEFAULT_DATA, creds)
        barrier()
        return DEFAULT_DATA, "kaggle"
    from pipelines.competitions.leaves.leafgen import VERSION, generate_leaves

    n = (cfg.synthetic_species, cfg.synthetic_train, cfg.synthetic_test, cfg.synthetic_size)
    root = REPO_ROOT / "cache" / "synthetic-leaves" / f"v{VERSION}_s{n[0]}_n{n[1]}_t{n[2]}_px{n[3]}_seed{cfg.seed}"
    say(f"no data/classify-leaves/ and no Kaggle credentials: using a synthetic leaf set ({n[0]} species, "
        f"{n[1]} train / {n[2]} test images, {n[3]} px) in {root.relative_to(REPO_ROOT)}")
    from pipelines.core.distributed import barrier, is_main_process

    if is_main_process() and not (root / ".complete").exists():  # rank 0 draws, the other ranks wait
        generate_leaves(root, n_species=n[0], n_train=n[1], n_test=n[2], size=n[3], seed=cfg.seed)
        (root / ".complete").touch()
    barrier()
    return root, "synthetic"


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """The shared CSV checks (``pipelines.core.io``), then no blank cell in ``columns``, no image listed twice."""
    from pipelines.core.io import check_unique, read_csv

    frame = read_csv(path, columns, dtype=str)
    blank = frame[columns].isna().any(axis=1)
    if blank.any():
        raise PipelineError(f"{path.name} row {int(np.flatnonzero(blank)[0]) + 2} has an empty {columns} value")
    check_unique(frame, "image", str(path))
    return frame


def auto_img_size(cfg: LeavesConfig, paths: list[Path], device) -> int:
    """``--img-size``; else on CUDA the size the backbone was pretrained at (timm's ``input_size``: lite0 224,
    lite1 240, lite2 260; 224 for a model timm does not know), as a timm user would fine-tune it; else (CPU) the
    images' median side (multiple of 16) within ``CPU_SIZES``."""
    if cfg.img_size:
        return cfg.img_size
    if device.type == "cuda":
        return pretrained_side(cfg.model) or 224
    from features.images import median_side

    return int(np.clip(round(median_side(paths) / 16) * 16, *CPU_SIZES))


def pretrained_side(model_name: str) -> int | None:
    """The side of timm's default pretrained config for ``model_name``; None for a model timm has no config for."""
    import timm

    try:
        pretrained = timm.models.get_pretrained_cfg(model_name)
    except (RuntimeError, ValueError):
        return None
    return int(pretrained.input_size[-1]) if pretrained and pretrained.input_size else None


def fit_size_to_model(model_name: str, size: int) -> int:
    """``size`` raised to the model's declared ``min_input_size`` (or its fixed input size), then checked with
    one forward pass of a blank image; a model that still cannot take it is one :class:`PipelineError`."""
    import torch

    from models._registry import create_model

    model = create_model(model_name, num_classes=2)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    need = size
    if cfg.get("fixed_input_size") and cfg.get("input_size"):
        need = int(cfg["input_size"][-1])
    elif cfg.get("min_input_size"):
        need = max(size, int(max(cfg["min_input_size"][1:])))
    if need != size:
        say(f"{model_name} takes {'exactly' if cfg.get('fixed_input_size') else 'at least'} {need} px: "
            f"images are resized to {need} px instead of {size}")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, need, need))
    except (RuntimeError, ValueError, AssertionError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise PipelineError(f"--model {model_name} cannot take {need} px images ({first}); "
                            f"try a larger --img-size") from None
    return need


def load_data(cfg: LeavesConfig, device) -> LeafData:
    """Read both tables, check them, encode labels and decode every image once."""
    from features.images import load_images

    root, source = resolve_data_dir(cfg)
    train = read_table(root / "train.csv", ["image", "label"])
    test = read_table(root / "test.csv", ["image"])
    classes = sorted(train["label"].unique())
    if len(classes) < 2:
        raise PipelineError(f"train.csv has a single label {classes[0]!r}; nothing to classify")
    y = np.searchsorted(classes, train["label"].to_numpy())
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < cfg.folds:
        rare = classes[int(counts.argmin())]
        raise PipelineError(f"label {rare!r} has {counts.min()} images, fewer than --folds {cfg.folds}")
    train_paths = [root / p for p in train["image"]]
    test_paths = [root / p for p in test["image"]]
    size = fit_size_to_model(cfg.model, auto_img_size(cfg, train_paths, device))
    workers = max(1, min(8, os.cpu_count() or 1))
    return LeafData(root, source, train, test, classes, y, load_images(train_paths, size, workers),
                    load_images(test_paths, size, workers), size)


def submission_spec(test: pd.DataFrame, classes) -> SubmissionSpec:
    """What a submission must be: every test image once, each labelled with one of the training ``classes``."""
    from submissions.writer import SubmissionSpec

    return SubmissionSpec(COMPETITION, ["image", "label"], ids=test["image"], labels=set(classes), numeric=False)


# -------------------------------------------------------------------------------------------- one fold
def make_loader(dataset, cfg: LeavesConfig, *, train: bool, seed: int, device):
    from torch.utils.data import DataLoader

    from features.images import SeededSampler
    from pipelines.core.distributed import world

    rank, world_size = world()
    workers = cfg.workers
    if workers < 0:  # decoding is done; on 2 cores workers would only compete with the network for the CPU
        cpus = os.cpu_count() or 1
        workers = min(8, cpus // world_size - 1) if device.type == "cuda" or cpus > 4 else 0
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    if not train:
        return DataLoader(dataset, batch_size=cfg.batch_size * 2, shuffle=False, **common)
    # full batches only (a last batch of one breaks batch norm); a set smaller than a batch is one batch
    per_rank = len(dataset) // world_size
    sampler = SeededSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world_size=world_size, drop_last=True)
    return DataLoader(dataset, batch_size=min(cfg.batch_size, per_rank), sampler=sampler, drop_last=True, **common)


class MixHook:
    """timm's Mixup/CutMix as the trainer's ``batch_hook`` (odd batches lose their last sample)."""

    def __init__(self, mixup):
        self.mixup = mixup

    def __call__(self, x, y):
        if len(x) % 2:
            x, y = x[:-1], y[:-1]
        return self.mixup(x, y)


def build_trainer(cfg: LeavesConfig, n_classes: int, steps_per_epoch: int, device):
    """Backbone (offline pretrained, head at zero), AdamW, warmup+cosine, label smoothing, EMA, mixup if asked."""
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    from models.pretrained import create_backbone
    from pipelines.core.training import Trainer, warmup_cosine

    model = create_backbone(cfg.model, n_classes, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file)
    if cfg.pretrained or cfg.pretrained_file:
        zero_head(model)
    head = {id(p) for p in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in head], "lr": cfg.lr},
              {"params": [p for p in model.parameters() if id(p) in head], "lr": cfg.lr, "lr_scale": cfg.head_lr_mult}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    hook = None
    if cfg.mix_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0):
        hook = MixHook(Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                             label_smoothing=cfg.label_smoothing, num_classes=n_classes))
        loss_fn = SoftTargetCrossEntropy()
    else:
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    return Trainer(model, optimizer, loss_fn, scheduler=scheduler, device=device, grad_clip=cfg.grad_clip,
                   channels_last=True, amp=cfg.amp, batch_hook=hook, ema=ema, progress=cfg.progress,
                   compile=cfg.compile)


def zero_head(model) -> None:
    """Start a fine-tuned model's new classifier at zero: every class equally likely, loss ln(K).

    timm initialises an EfficientNet classifier uniformly in +-1/sqrt(n_classes): with few classes and
    1280 pretrained features the first logits have a spread of 3-5, the first loss is 5-11 instead of
    ln(K), and the first epoch spends itself (and the pretrained body's features) undoing that.
    """
    import torch

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, torch.nn.Linear):
        torch.nn.init.zeros_(head.weight)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)


def inner_split(y: np.ndarray, train_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``train_idx`` split into (fit, early-stopping) rows: a stratified 10 % (at least one per class) stops."""
    from sklearn.model_selection import StratifiedShuffleSplit

    n_classes = len(np.unique(y[train_idx]))
    size = max(n_classes, round(0.1 * len(train_idx)))
    try:
        fit, stop = next(StratifiedShuffleSplit(1, test_size=size, random_state=seed).split(train_idx, y[train_idx]))
    except ValueError as err:
        raise PipelineError(f"--patience needs an inner early-stopping split of the training folds ({err}); "
                            "use --patience 0") from None
    return train_idx[np.sort(fit)], train_idx[np.sort(stop)]


def epoch_choice(cfg: LeavesConfig) -> str:
    """How the weights that score each fold were chosen (goes into the record)."""
    if cfg.patience > 0:
        return (f"early stopping (patience {cfg.patience}) on a stratified 10% inner split of the training folds; "
                "the scored fold never chose an epoch")
    return f"fixed: the last of {cfg.epochs} epochs; the scored fold never chose an epoch"


def fit_fold(cfg: LeavesConfig, data: LeafData, fold: int, train_idx, valid_idx, run_dir: Path, device,
             on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Train one fold (resuming from its last checkpoint) and predict its rows and the test set in every view.

    The fold's rows never choose anything: with ``patience`` 0 the weights after the last epoch score them;
    else early stopping watches an inner split of ``train_idx`` (:func:`inner_split`). The fold's own
    accuracy is still measured after each epoch, for the curves and for ``on_epoch(epoch, val_acc)`` (a
    tuner reports and prunes there). Returns ``valid``/``test`` probabilities of the plain view and
    ``valid_views``/``test_views`` of shape (views, rows, classes).
    """
    from pipelines.core.checkpoint import load_checkpoint
    from pipelines.core.distributed import barrier
    from pipelines.core.seed import set_seed

    set_seed(cfg.seed * 1000 + fold)  # per fold: ``--fold k`` alone reproduces fold k of a full run
    stop_idx = np.array([], dtype=int)
    if cfg.patience > 0:
        train_idx, stop_idx = inner_split(data.y, np.asarray(train_idx), cfg.seed * 1000 + fold)
    trainer = build_trainer(cfg, len(data.classes), _n_batches(len(train_idx), cfg), device)
    loaders = fold_loaders(cfg, data, fold, trainer, train_idx, valid_idx, stop_idx, device)
    epochs = FoldEpochs(cfg, fold, data.classes, loaders, run_dir / f"fold{fold}", on_epoch)
    epochs.resume(trainer)
    trainer.add_callback("on_epoch_end", epochs)
    start = time.perf_counter()
    trainer.fit(loaders.train, cfg.epochs - trainer.epoch)
    train_seconds = time.perf_counter() - start
    barrier()
    chosen = load_checkpoint(epochs.best)
    trainer.eval_model.load_state_dict(chosen["model"])
    valid_views, test_views = (predict_views(trainer, loader, cfg.tta) for loader in (loaders.valid, loaders.test))
    return {"valid": valid_views[0], "test": test_views[0], "valid_views": valid_views, "test_views": test_views,
            "history": epochs.history, "train_seconds": train_seconds, "epoch_used": int(chosen["epoch"]),
            "n_fit": len(train_idx), "n_stop": len(stop_idx)}


class FoldLoaders(NamedTuple):
    train: object  # augmented, seeded per sample (features.images.SeededSampler)
    valid: object  # the fold's rows: reported every epoch, scored at the end
    stop: object | None  # the inner split early stopping watches (``patience`` > 0)
    test: object


def fold_loaders(cfg: LeavesConfig, data: LeafData, fold: int, trainer, train_idx, valid_idx, stop_idx,
                 device) -> FoldLoaders:
    """The fold's loaders, normalised with the mean/std the model expects."""
    from features.images import ImageDataset, eval_transform, train_transform
    from models.pretrained import input_stats

    mean, std = input_stats(trainer.module)
    evaluate = eval_transform(data.img_size, mean, std)
    augment = train_transform(data.img_size, mean, std, auto_augment=cfg.auto_augment, scale=(cfg.crop_scale, 1.0),
                              rotation=cfg.rotation, jitter=cfg.jitter)
    train = make_loader(ImageDataset([data.train_images[i] for i in train_idx], data.y[train_idx], augment),
                        cfg, train=True, seed=cfg.seed * 1000 + fold, device=device)

    def eval_loader(idx):
        images = [data.train_images[i] for i in idx]
        return make_loader(ImageDataset(images, data.y[idx], evaluate), cfg, train=False, seed=0, device=device)

    test = make_loader(ImageDataset(data.test_images, None, evaluate), cfg, train=False, seed=0, device=device)
    return FoldLoaders(train, eval_loader(valid_idx), eval_loader(stop_idx) if len(stop_idx) else None, test)


class FoldEpochs:
    """A fold's ``on_epoch_end``: score the fold's rows (reported, never used to choose), early-stop on the
    inner split, log, and checkpoint: ``best.pt`` holds the weights that will score the fold, ``last.pt``
    everything a killed run needs to continue exactly."""

    def __init__(self, cfg: LeavesConfig, fold: int, classes: list[str], loaders: FoldLoaders, fold_dir: Path,
                 on_epoch: Callable[[int, float], None] | None):
        from pipelines.core.callbacks import EarlyStopping

        self.cfg, self.fold, self.classes, self.loaders, self.on_epoch = cfg, fold, classes, loaders, on_epoch
        self.last, self.best = fold_dir / "last.pt", fold_dir / "best.pt"
        self.stopper, self.history = EarlyStopping(cfg.patience, mode="max"), []

    def resume(self, trainer) -> None:
        """Continue from ``last.pt`` if a killed run left one."""
        from pipelines.core.checkpoint import load_checkpoint

        if not self.last.exists():
            return
        state = load_checkpoint(self.last)
        trainer.load_state_dict(state["trainer"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = state["history"]
        trainer.should_stop = state["finished"]
        say(f"fold {self.fold}: resumed after epoch {trainer.epoch}")

    def __call__(self, tr, stats: dict) -> None:
        from pipelines.core.checkpoint import save_checkpoint
        from pipelines.core.distributed import barrier, broadcast_value, is_main_process

        if not np.isfinite(stats["loss"]):
            raise PipelineError(f"fold {self.fold} diverged at epoch {tr.epoch} (loss is NaN); lower --lr")
        metrics = tr.evaluate(self.loaders.valid)  # reported, never used to choose
        chosen = True  # patience 0: the latest weights are the ones that score the fold
        if self.loaders.stop is not None:
            metrics["stop_acc"] = tr.evaluate(self.loaders.stop)["val_acc"]
            chosen = self.stopper.step(broadcast_value(metrics["stop_acc"]))
            tr.should_stop = self.stopper.should_stop
        self.history.append({**stats, **metrics, "lr": tr.optimizer.param_groups[0]["lr"]})
        stop = f" stop_acc {metrics['stop_acc']:.4f}" if "stop_acc" in metrics else ""
        say(f"fold {self.fold} epoch {tr.epoch}/{self.cfg.epochs}: loss {stats['loss']:.3f} "
            f"acc {stats.get('acc', 0):.3f} val_loss {metrics['val_loss']:.3f} val_acc {metrics['val_acc']:.4f}{stop} "
            f"({stats['samples_per_s']:.0f} img/s)")
        if is_main_process():
            if chosen:
                save_checkpoint(self.best, {"model": tr.eval_model.state_dict(), "epoch": tr.epoch,
                                            "classes": self.classes})
            save_checkpoint(self.last, {"trainer": tr.state_dict(), "early_stopping": self.stopper.state_dict(),
                                        "history": self.history,
                                        "finished": tr.should_stop or tr.epoch >= self.cfg.epochs})
        barrier()
        if self.on_epoch is not None:
            self.on_epoch(tr.epoch, metrics["val_acc"])


def predict_views(trainer, loader, n_views: int) -> np.ndarray:
    """Softmax probabilities of ``loader``'s rows in each of the first ``n_views`` test-time views:
    (views, rows, classes)."""
    import torch

    from features.images import tta_views

    return torch.stack([trainer.predict(loader, transform=v).softmax(1) for v in tta_views(n_views)]).numpy()


def choose_tta(valid_views: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict:
    """How many test-time views to average, chosen on out-of-fold accuracy, cross-fitted.

    ``valid_views`` (views, rows, classes) holds every trained row's probabilities per view. Candidates are
    the first 1..V views. Each fold's rows get the count that scores best on the *other* folds' rows (ties:
    fewer views), so the reported CV stays honest; the test set gets the count best on all rows.
    """
    n_views = len(valid_views)
    means = np.cumsum(valid_views, axis=0) / np.arange(1, n_views + 1)[:, None, None]
    hits = means.argmax(2) == np.asarray(y)[None, :]

    def best(rows: np.ndarray) -> int:
        acc = hits[:, rows].mean(1)
        return int(np.flatnonzero(acc >= acc.max() - 1e-12)[0]) + 1

    oof, per_fold = np.empty_like(valid_views[0]), {}
    for k in np.unique(folds):
        rows, others = folds == k, folds != k
        per_fold[int(k)] = best(others) if others.any() else 1  # a single trained fold has nothing to choose on
        oof[rows] = means[per_fold[int(k)] - 1, rows]
    return {"oof": oof, "per_fold": per_fold, "test": best(np.ones(len(folds), bool)),
            "oof_accuracy": {k + 1: float(hits[k].mean()) for k in range(n_views)}}


def _n_batches(n: int, cfg: LeavesConfig) -> int:
    """Optimizer steps per epoch, as :func:`make_loader` batches the training set (for the LR schedule)."""
    from pipelines.core.distributed import world

    per_rank = n // world()[1]
    return max(1, per_rank // min(cfg.batch_size, per_rank))


# ---------------------------------------------------------------------------------------------- output
def curves_figure(histories: dict[int, list[dict]]):
    from pipelines.core.io import pyplot

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for fold, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        (line,) = ax_loss.plot(epochs, [h["loss"] for h in hist], label=f"fold {fold} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in hist], "--", color=line.get_color(), label=f"fold {fold} valid")
        ax_acc.plot(epochs, [h.get("acc", np.nan) for h in hist], color=line.get_color(), label=f"fold {fold} train")
        ax_acc.plot(epochs, [h["val_acc"] for h in hist], "--", color=line.get_color(), label=f"fold {fold} valid")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle("learning curves (train with augmentation/mixup; valid with EMA weights)")
    fig.tight_layout()
    plt.close(fig)  # the writer saves it; pyplot need not keep it alive
    return fig


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]):
    from sklearn.metrics import confusion_matrix

    from pipelines.core.io import pyplot

    plt = pyplot()
    cm = confusion_matrix(y_true, y_pred, labels=range(len(classes)))
    side = min(20, 3 + 0.4 * len(classes))
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if v > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("out-of-fold confusion matrix")
    fig.tight_layout()
    plt.close(fig)
    return fig


def say(message: str) -> None:
    from pipelines.core.distributed import is_main_process

    if is_main_process():
        print(message, flush=True)


def open_run_dir(cfg: LeavesConfig) -> tuple[LeavesConfig, Path]:
    """A new run folder's path (created once the data has loaded), or the run ``--resume`` names and
    its saved config."""
    base = Path(cfg.runs_dir) / "leaves"
    if cfg.resume:
        run_dir = Path(cfg.resume) if Path(cfg.resume).is_dir() else base / cfg.resume
        if not (run_dir / "config.json").is_file():
            raise PipelineError(f"--resume: no run at {run_dir} (expected a config.json there)")
        saved = json.loads((run_dir / "config.json").read_text())
        keep = {"progress": cfg.progress, "workers": cfg.workers, "resume": cfg.resume}
        return LeavesConfig(**{**saved, **keep}), run_dir
    from pipelines.core.distributed import broadcast_object

    name = broadcast_object(f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}_{cfg.model}_seed{cfg.seed}")  # rank 0's name
    return cfg, base / name


# ------------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    run_config(cfg)
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
    if cfg.fold is not None and not 0 <= cfg.fold < cfg.folds:
        raise PipelineError(f"--fold {cfg.fold} is outside 0..{cfg.folds - 1}")
    weights = weights_record(cfg.model, cfg.pretrained, cfg.pretrained_file)  # fails before data loads
    data = load_data(cfg, device)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(dumps(dataclasses.asdict(cfg)))
        (run_dir / "classes.json").write_text(dumps({"classes": data.classes}))
    say(f"{len(data.train)} train / {len(data.test)} test images, {len(data.classes)} classes, "
        f"{data.img_size} px, {cfg.model} on {device} x{world()[1]}; run {run_dir}")
    return cfg, run_dir, device, data, weights


def cross_validate_folds(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, run_dir: Path, device):
    """Train every fold (or ``--fold`` alone), then choose the test-time views cross-fitted on the OOF rows.

    Returns the CV result (OOF and test probabilities in the chosen views, per-fold accuracy), each fold's
    :func:`fit_fold` output, and the view choice (:func:`choose_tta`).
    """
    from pipelines.core.cv import cross_validate

    fold_info: dict[int, dict] = {}

    def fit_predict(train_idx, valid_idx, fold):
        info = fit_fold(cfg, data, fold, train_idx, valid_idx, run_dir, device)
        fold_info[fold] = info
        say(f"fold {fold}: accuracy {accuracy(data.y[valid_idx], info['valid']):.4f} "
            f"(weights of epoch {info['epoch_used']}, {info['train_seconds']:.0f} s training)")
        return info["valid"], info["test"]

    result = cross_validate(fit_predict, folds, data.y, accuracy,
                            only_folds=None if cfg.fold is None else [cfg.fold])
    trained = np.isin(folds, sorted(fold_info))
    views = np.zeros((len(fold_info[next(iter(fold_info))]["valid_views"]), len(folds), len(data.classes)))
    for k, info in fold_info.items():
        views[:, folds == k] = info["valid_views"]
    tta = choose_tta(views[:, trained], data.y[trained], folds[trained])
    tta["views_tried"] = len(views)
    result.oof[trained] = tta["oof"]
    result.fold_scores = [accuracy(data.y[folds == k], result.oof[folds == k]) for k in sorted(fold_info)]
    result.test = np.mean([info["test_views"][: tta["test"]].mean(0) for info in fold_info.values()], axis=0)
    say("test-time views by OOF accuracy: " + ", ".join(f"{k}: {a:.4f}" for k, a in tta["oof_accuracy"].items())
        + f"; the test set uses {tta['test']}")
    say("fold accuracies: " + ", ".join(f"{k}: {s:.4f}" for k, s in zip(sorted(fold_info), result.fold_scores,
                                                                         strict=True)))
    say(f"cv accuracy: {result.mean:.4f} +- {result.std:.4f}")
    return result, fold_info, tta


def write_leaves_run(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, result, fold_info: dict[int, dict],
                     tta: dict, *, weights: dict, device, run_dir: Path, started: float,
                     load_seconds: float) -> RunFiles:
    """The submission (argmax of the test probabilities), the OOF table with every class's probability, the
    test probabilities a blend needs, the record and the figures, through the shared writer."""
    from submissions.writer import write_run

    classes = np.asarray(data.classes)
    trained = np.isin(folds, sorted(fold_info))
    submission = pd.DataFrame({"image": data.test["image"], "label": classes[result.test.argmax(1)]})
    spec = submission_spec(data.test, data.classes)
    oof = pd.DataFrame({"image": data.train["image"], "fold": folds, "label": data.train["label"]})[trained]
    oof["pred"] = classes[result.oof[trained].argmax(1)]
    prob_columns = [f"p_{c}" for c in data.classes]
    probs = pd.DataFrame(result.oof[trained], columns=prob_columns, index=oof.index)
    oof = pd.concat([oof, probs], axis=1)
    # the test probabilities exactly as the submission's argmax reads them (fold mean, chosen TTA views): a blend
    # of several runs needs them (``python -m pipelines blend``)
    test_probs = pd.concat([data.test[["image"]].reset_index(drop=True),
                            pd.DataFrame(result.test, columns=prob_columns)], axis=1)
    record = leaves_record(cfg, data, folds, result, fold_info, tta, weights=weights, device=device,
                           run_dir=run_dir, timings={"load_s": load_seconds, "fold_s": result.fold_seconds,
                                                     "total_s": time.perf_counter() - started})
    figures = {"curves": curves_figure({k: v["history"] for k, v in fold_info.items()}),
               "confusion": confusion_figure(data.y[trained], result.oof[trained].argmax(1), data.classes)}
    return write_run(submission, spec, out_dir=cfg.out_dir, record=record, oof=oof, figures=figures,
                     tables={"test_probs": test_probs})


def leaves_record(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, result, fold_info: dict[int, dict],
                  tta: dict, *, weights: dict, device, run_dir: Path, timings: dict) -> RunRecord:
    """The run record: config, seed, fold ids, scores, the starting weights, the epoch and view choices."""
    from pipelines.core.distributed import world

    extra = {
        "weights": weights,  # where the starting weights came from, with their SHA-256
        "data": {"dir": str(data.root), "source": data.source, "n_train": len(data.train),
                 "n_test": len(data.test), "img_size": data.img_size},
        "classes": data.classes,
        "trained_folds": sorted(fold_info),
        "epoch_choice": epoch_choice(cfg),
        "fold_epochs_used": {k: v["epoch_used"] for k, v in fold_info.items()},
        "tta": {"views_tried": tta["views_tried"], "oof_accuracy_by_views": tta["oof_accuracy"],
                "views_per_fold": tta["per_fold"], "views_test": tta["test"],
                "rule": "each fold's rows use the view count best on the other folds' rows; test: best on all"},
        "history": {k: v["history"] for k, v in fold_info.items()},
        "device": str(device),
        "world_size": world()[1],
        "run_dir": str(run_dir),
        **cfg.extra_record,
    }
    return RunRecord(
        competition=COMPETITION, preset=cfg.model, cv_mean=result.mean, metric=LEAVES.metric, cv_std=result.std,
        fold_scores=result.fold_scores, seed=cfg.seed, config=dataclasses.asdict(cfg), data_dir=str(data.root),
        folds={"strategy": "stratified", "n_splits": cfg.folds, "ids": folds}, kaggle_competition=LEAVES.kaggle_slug,
        timings=timings, extra=extra,
    )
