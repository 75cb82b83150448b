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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from pipelines.competitions.leaves import COMPETITION as LEAVES
from pipelines.core.errors import PipelineError
from pipelines.core.metrics import accuracy  # the competition's metric
from pipelines.core.records import REPO_ROOT, RunRecord, dumps

if TYPE_CHECKING:
    import torch

    from submissions.writer import RunFiles, SubmissionSpec

COMPETITION, DEFAULT_DATA = LEAVES.name, LEAVES.default_data  # registered once, in this package's __init__
# CPU image size: the images' median side, small images upsampled to at least 96 px (efficientnet-lite0 at
# 64 px ends in 2x2 feature maps and loses ~8 points on small real images), large ones capped at 112 px
# (the 2-core CPU budget)
CPU_SIZES = (96, 112)
# default schedule (``--epochs auto``): about ``--steps`` optimizer steps per fold, within EPOCH_RANGE passes
# over each training image (docs/leaves.md: chosen on ELPV and the synthetic set)
EPOCH_RANGE = (3, 10)


@dataclass
class LeavesConfig:
    """Every setting of a run; CLI flags override the defaults and the resolved config is saved."""

    data_dir: str | None = None
    model: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # offline ImageNet weights (models/pretrained.py) when the backbone has them
    pretrained_file: str | None = None
    img_size: int | None = None  # None: 224 on CUDA; on CPU the images' median side within CPU_SIZES
    epochs: int | None = None  # None: from the data size (auto_epochs), resolved and saved before training
    steps: int = 300  # the automatic schedule's optimizer steps per fold (ignored when epochs is given)
    batch_size: int = 32
    lr: float = 1e-3
    head_lr_mult: float = 1.0  # classifier LR / body LR (x10 measured no better once the head starts at zero)
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    mixup: float = 0.2  # mixup alpha of a mixed batch; no batch is mixed unless --mix-prob > 0 (default 0: off)
    cutmix: float = 1.0  # cutmix alpha of a mixed batch (likewise only with --mix-prob > 0)
    # augmentation for ~10 epochs over a few thousand images: light (crops, flips). The strong policy
    # (--auto-augment trivial --mix-prob 0.2 --rotation 30 --jitter 0.3 --crop-scale 0.5) scored 2 points
    # lower on real ELPV cells at this budget; it pays off only over much longer schedules
    mix_prob: float = 0.0  # share of batches mixed (mixup/cutmix)
    auto_augment: str = "none"
    crop_scale: float = 0.7  # smallest area share kept by the random resized crop
    rotation: float = 0.0  # random rotation, degrees
    jitter: float = 0.0  # colour jitter (brightness, contrast, saturation)
    ema_decay: float = 0.995  # 0 disables the EMA of weights
    freeze: int = 3  # leading layer groups (stem, then stages) kept at their pretrained values; 0 trains all
    patience: int = 0  # 0: fixed epochs, scored at the last; N: early stopping on an inner split of the train folds
    folds: int = 3
    fold: int | None = None  # train only this fold
    hflip: str = "auto"  # probability of a horizontal flip; auto: kept if the training rows keep labels under it
    vflip: str = "auto"  # likewise, vertical
    rot90: str = "auto"  # random quarter turns: on, off or auto
    tta: int = 4  # test-time views tried: the identity, then the kept flips and turns; the count kept on OOF
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
    a("--epochs", type=_auto_int, default=d.epochs, help="passes over each training image (default auto: "
      f"about --steps optimizer steps per fold, {EPOCH_RANGE[0]}..{EPOCH_RANGE[1]} epochs)")
    for name in ("steps", "batch_size", "patience", "folds", "tta", "workers", "freeze"):
        a(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    a("--hflip", default=d.hflip, help="horizontal flip probability (default auto: decided from the training rows)")
    a("--vflip", default=d.vflip, help="vertical flip probability (default auto: decided from the training rows)")
    a("--rot90", default=d.rot90, choices=["auto", "on", "off"], help="random quarter turns (default auto)")
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


def _auto_int(value: str) -> int | None:
    """``auto`` -> None, else an integer (argparse type of ``--epochs``)."""
    if value.lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> LeavesConfig:
    fields = {f.name for f in dataclasses.fields(LeavesConfig)}
    return LeavesConfig(**{k: v for k, v in vars(args).items() if k in fields})


# the float flags' accepted ranges (checked before any work: ``nan``, ``inf`` and nonsense are one error line)
FLOAT_RANGES = {"lr": (1e-12, 10), "head_lr_mult": (0, 1e4), "weight_decay": (0, 10), "warmup_epochs": (0, 1e4),
                "grad_clip": (0, 1e6), "label_smoothing": (0, 0.99), "mixup": (0, 100), "cutmix": (0, 100),
                "mix_prob": (0, 1), "crop_scale": (0.01, 1), "rotation": (0, 180), "jitter": (0, 1),
                "ema_decay": (0, 0.99999)}


def check_config(cfg: LeavesConfig) -> None:
    """Refuse settings that cannot train, and output folders that cannot be written, before any work and
    before a run folder exists."""
    from pipelines.competitions.leaves.views import flag_overrides
    from submissions.writer import check_writable_dir

    for name, low in (("epochs", 1), ("steps", 1), ("batch_size", 1), ("folds", 2), ("tta", 1),
                      ("patience", 0), ("workers", -1), ("freeze", 0)):
        if getattr(cfg, name) is not None and getattr(cfg, name) < low:
            raise PipelineError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(cfg, name)}")
    for name, (low, high) in FLOAT_RANGES.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low <= value <= high):
            raise PipelineError(f"--{name.replace('_', '-')} must be a number in [{low:g}, {high:g}], got {value}")
    if cfg.seed is not None and not 0 <= cfg.seed < 2**32:
        raise PipelineError(f"--seed must be in 0..{2**32 - 1}, got {cfg.seed}")
    if cfg.tta > 8:
        raise PipelineError(f"--tta must be 1 to 8 views (the square's symmetries), got {cfg.tta}")
    flag_overrides(cfg)  # --hflip/--vflip/--rot90 values, one line each
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
    train_images: torch.Tensor  # (N, 3, S, S) uint8, decoded once (features.images.decode_cache)
    test_images: torch.Tensor
    img_size: int
    size_rule: str = ""  # how img_size was chosen (goes into the record)
    probe: object = None  # features.symmetry features of a sample of the training rows, computed once


def resolve_data_dir(cfg: LeavesConfig) -> tuple[Path, str]:
    """The folder to read and where it came from: given, local, kaggle or synthetic."""
    if cfg.data_dir is not None:
        if not cfg.data_dir.strip():
            raise PipelineError("--data-dir is empty; give a folder, or leave the flag out for the default data")
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
            fresh = not DEFAULT_DATA.exists()
            try:
                kaggle_client.download(LEAVES.kaggle_slug, DEFAULT_DATA, creds)
            except BaseException:
                if fresh:  # a failed download leaves nothing behind in the checkout
                    shutil.rmtree(DEFAULT_DATA, ignore_errors=True)
                raise
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


def image_paths(root: Path, table: pd.DataFrame, name: str) -> list[Path]:
    """Each row's image under ``root``; a name that leaves it (absolute, ``..``) is refused naming its row."""
    from pipelines.core.paths import inside

    return [inside(root, p, f"{name} row {i + 2} image") for i, p in enumerate(table["image"])]


def auto_img_size(cfg: LeavesConfig, paths: list[Path], device) -> tuple[int, str]:
    """The training size and the rule that chose it: ``--img-size``; else on CUDA the size the backbone was
    pretrained at (timm's ``input_size``: lite0 224, lite1 240, lite2 260; 224 for a model timm does not know),
    as a timm user would fine-tune it; else (CPU) the median shorter side over every training image (multiple
    of 16) within ``CPU_SIZES``: smaller images are upsampled, larger ones shrunk."""
    if cfg.img_size:
        return cfg.img_size, "--img-size"
    if device.type == "cuda":
        side = pretrained_side(cfg.model)
        return side or 224, f"{cfg.model}'s pretrained size" if side else "224 (no pretrained size known)"
    from features.images import median_side

    median = median_side(paths)
    size = int(np.clip(round(median / 16) * 16, *CPU_SIZES))
    verb = "upsampled" if size > median else "shrunk" if size < median else "kept"
    return size, f"median shorter side {median} px over {len(paths)} training images, {verb} to {size} px " \
                 f"(CPU range {CPU_SIZES[0]}..{CPU_SIZES[1]})"


def auto_epochs(n_fit: int, batch_size: int, steps: int = LeavesConfig.steps) -> int:
    """Epochs from the data size: about ``steps`` optimizer steps per fold, within ``EPOCH_RANGE`` passes over
    each image (a few thousand images get several passes, tens of thousands the minimum)."""
    steps_per_epoch = max(1, n_fit // batch_size)
    return int(np.clip(round(steps / steps_per_epoch), *EPOCH_RANGE))


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

    from models import create_model

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
    """Read both tables, check them, encode labels and decode every image once into a uint8 cache."""
    from features.images import decode_cache

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
    train_paths = image_paths(root, train, "train.csv")
    test_paths = image_paths(root, test, "test.csv")
    size, rule = auto_img_size(cfg, train_paths, device)
    fitted = fit_size_to_model(cfg.model, size)
    if fitted != size:
        rule += f", raised to {fitted} px ({cfg.model}'s minimum)"
    workers = max(1, min(8, os.cpu_count() or 1))
    spill = Path(cfg.runs_dir) / "leaves" / ".image-cache"
    return LeafData(root, source, train, test, classes, y, decode_cache(train_paths, fitted, workers, spill),
                    decode_cache(test_paths, fitted, workers, spill), fitted, rule)


def submission_spec(test: pd.DataFrame, classes) -> SubmissionSpec:
    """What a submission must be: every test image once, each labelled with one of the training ``classes``."""
    from submissions.writer import SubmissionSpec

    return SubmissionSpec(COMPETITION, ["image", "label"], ids=test["image"], labels=set(classes), numeric=False)


# -------------------------------------------------------------------------------------------- one fold
def make_loader(images, labels, cfg: LeavesConfig, *, train: bool, seed: int, device):
    """Batches of the uint8 cache (moved to the GPU once when it fits there): shuffled full batches (training,
    sharded over DDP ranks) or in order."""
    from features.images import TensorBatches, on_device
    from pipelines.core.distributed import world

    rank, world_size = world()
    images = on_device(images, device)
    if not train:
        return TensorBatches(images, labels, cfg.batch_size * 2, shuffle=False, pin=device.type == "cuda")
    return TensorBatches(images, labels, cfg.batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size,
                         pin=device.type == "cuda")


class MixHook:
    """timm's Mixup/CutMix as the trainer's ``batch_hook`` (odd batches lose their last sample)."""

    def __init__(self, mixup):
        self.mixup = mixup

    def __call__(self, x, y):
        if len(x) % 2:
            x, y = x[:-1], y[:-1]
        return self.mixup(x, y)


def build_trainer(cfg: LeavesConfig, n_classes: int, steps_per_epoch: int, device, symmetry=None):
    """Backbone (offline pretrained, head at zero), AdamW, warmup+cosine, label smoothing, EMA, the batched
    augmentation with ``symmetry``'s flips and turns (none when not given), mixup if asked."""
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    from features.augment import BatchAugment
    from features.symmetry import Symmetry
    from models import create_model, get_classifier, input_stats
    from pipelines.core.training import Trainer, warmup_cosine

    model = create_model(cfg.model, n_classes, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file,
                         zero_head=bool(cfg.pretrained or cfg.pretrained_file))
    if cfg.pretrained or cfg.pretrained_file:
        freeze_early(model, cfg.freeze)
    classifier = get_classifier(model)
    head = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in head], "lr": cfg.lr, "lr_scale": cfg.head_lr_mult}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    epochs = cfg.epochs or auto_epochs(steps_per_epoch * cfg.batch_size, cfg.batch_size, cfg.steps)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)
    mix = None
    if cfg.mix_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0):
        mix = MixHook(Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                            label_smoothing=cfg.label_smoothing, num_classes=n_classes))
        loss_fn = SoftTargetCrossEntropy()
    else:
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mean, std = input_stats(model)
    hook = BatchAugment(mean, std, symmetry=symmetry or Symmetry(), crop_scale=cfg.crop_scale, rotation=cfg.rotation,
                        jitter=cfg.jitter, auto_augment=cfg.auto_augment, then=mix)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    return Trainer(model, optimizer, loss_fn, scheduler=scheduler, device=device, grad_clip=cfg.grad_clip,
                   channels_last=True, amp=cfg.amp, batch_hook=hook, ema=ema, progress=cfg.progress,
                   compile=cfg.compile)


def freeze_early(model, groups: int) -> list[str]:
    """Keep the first ``groups`` layer groups of a pretrained model at their ImageNet values (timm's coarse
    ``group_matcher``: the stem, then one group per stage; batch norm frozen with its statistics).

    The early layers see edges and textures, which ImageNet taught well, at the highest resolution, where a
    backward pass costs most: freezing the stem and two stages of efficientnet-lite0 trains 1.4x faster at
    112 px on a CPU. Returns the frozen module names (none for a model without a group matcher).
    """
    if groups <= 0 or not hasattr(model, "group_matcher"):
        return []
    from timm.models import group_modules
    from timm.utils.model import freeze

    ordered = list(group_modules(model, model.group_matcher(coarse=True)).values())
    names = sorted({name.rsplit(".", 1)[0] if name.count(".") > 1 else name
                    for group in ordered[:groups] for name in group})
    freeze(model, names)
    return names


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


def epoch_choice(cfg: LeavesConfig, epochs: int | None = None) -> str:
    """How the weights that score each fold were chosen (goes into the record)."""
    if cfg.patience > 0:
        return (f"early stopping (patience {cfg.patience}) on a stratified 10% inner split of the training folds; "
                "the scored fold never chose an epoch")
    return f"fixed: the last of {epochs or cfg.epochs} epochs; the scored fold never chose an epoch"


def fit_fold(cfg: LeavesConfig, data: LeafData, fold: int, train_idx, valid_idx, run_dir: Path, device,
             on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Train one fold (resuming from its last checkpoint) and predict its rows and the test set once, in every
    view of the symmetry its training rows kept.

    The fold's rows never choose anything: the flips and turns come from the flags or from the probe on
    ``train_idx`` (``views.fold_symmetry``); with ``patience`` 0 the weights after the last epoch score them,
    else early stopping watches an inner split of ``train_idx`` (:func:`inner_split`). The fold's own rows are
    scored once, after training, unless ``on_epoch(epoch, val_acc)`` asks for every epoch (a tuner reports and
    prunes there). Returns ``valid``/``test`` probabilities of the plain view, ``valid_views``/``test_views`` of
    shape (views, rows, classes), the symmetry and its record.
    """
    from models.pretrained import input_stats
    from pipelines.competitions.leaves.views import fold_symmetry, predict_views, tta_elements
    from pipelines.core.checkpoint import load_checkpoint
    from pipelines.core.distributed import barrier
    from pipelines.core.seed import seed32, set_seed

    fold_seed = seed32(cfg.seed * 1000 + fold)  # per fold: ``--fold k`` alone reproduces fold k of a full run
    symmetry, symmetry_record = fold_symmetry(cfg, probe_of(cfg, data, device), data.y, np.asarray(train_idx),
                                              fold_seed)
    set_seed(fold_seed)
    stop_idx = np.array([], dtype=int)
    if cfg.patience > 0:
        train_idx, stop_idx = inner_split(data.y, np.asarray(train_idx), fold_seed)
    steps = _n_batches(len(train_idx), cfg)
    cfg = dataclasses.replace(cfg, epochs=cfg.epochs or auto_epochs(len(train_idx), cfg.batch_size, cfg.steps))
    trainer = build_trainer(cfg, len(data.classes), steps, device, symmetry=symmetry)
    loaders = fold_loaders(cfg, data, fold, train_idx, valid_idx, stop_idx, device)
    epochs = FoldEpochs(cfg, fold, data.classes, loaders, run_dir / f"fold{fold}", on_epoch)
    epochs.resume(trainer)
    trainer.add_callback("on_epoch_end", epochs)
    start = time.perf_counter()
    trainer.fit(loaders.train, cfg.epochs - trainer.epoch)
    train_seconds = time.perf_counter() - start
    barrier()
    chosen = load_checkpoint(epochs.best)
    trainer.eval_model.load_state_dict(chosen["model"])
    elements = tta_elements(symmetry, cfg.tta)
    mean, std = input_stats(trainer.module)
    valid_views, test_views = (predict_views(trainer, loader, elements, mean, std)
                               for loader in (loaders.valid, loaders.test))
    return {"valid": valid_views[0], "test": test_views[0], "valid_views": valid_views, "test_views": test_views,
            "history": epochs.history, "train_seconds": train_seconds, "epoch_used": int(chosen["epoch"]),
            "epochs": cfg.epochs, "n_fit": len(train_idx), "n_stop": len(stop_idx), "symmetry": symmetry,
            "symmetry_record": symmetry_record, "views": elements}


def probe_of(cfg: LeavesConfig, data: LeafData, device):
    """The symmetry probe's features (computed once per run, on a sample of all training rows); None when
    the flags decide every symmetry."""
    from pipelines.competitions.leaves.views import flag_overrides, probe_features

    if None not in flag_overrides(cfg):
        return None
    if data.probe is None:
        data.probe = probe_features(data.train_images, data.y, cfg.seed, device)
    return data.probe


class FoldLoaders(NamedTuple):
    train: object  # shuffled full uint8 batches; augmented on the device (features.augment.BatchAugment)
    valid: object  # the fold's rows: scored once after training (every epoch only for a tuner)
    stop: object | None  # the inner split early stopping watches (``patience`` > 0)
    test: object


def fold_loaders(cfg: LeavesConfig, data: LeafData, fold: int, train_idx, valid_idx, stop_idx,
                 device) -> FoldLoaders:
    """The fold's batches of the uint8 cache (normalisation happens on the device, in the views)."""
    import torch

    def rows(idx):
        return data.train_images[torch.as_tensor(np.asarray(idx, dtype=np.int64))], data.y[idx]

    from pipelines.core.seed import seed32

    train = make_loader(*rows(train_idx), cfg, train=True, seed=seed32(cfg.seed * 1000 + fold), device=device)
    test = make_loader(data.test_images, None, cfg, train=False, seed=0, device=device)
    stop = make_loader(*rows(stop_idx), cfg, train=False, seed=0, device=device) if len(stop_idx) else None
    return FoldLoaders(train, make_loader(*rows(valid_idx), cfg, train=False, seed=0, device=device), stop, test)


class FoldEpochs:
    """A fold's ``on_epoch_end``: early-stop on the inner split, log, and checkpoint: ``best.pt`` holds the
    weights that will score the fold, ``last.pt`` everything a killed run needs to continue exactly. The
    fold's own rows are scored here only for a tuner's ``on_epoch`` (never used to choose)."""

    def __init__(self, cfg: LeavesConfig, fold: int, classes: list[str], loaders: FoldLoaders, fold_dir: Path,
                 on_epoch: Callable[[int, float], None] | None):
        from pipelines.core.callbacks import EarlyStopping

        self.cfg, self.fold, self.classes, self.loaders, self.on_epoch = cfg, fold, classes, loaders, on_epoch
        self.view = None  # the plain view, normalised with the model's mean/std (set at the first epoch)
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
        if self.view is None:
            from features.augment import View
            from models.pretrained import input_stats

            self.view = View("identity", *input_stats(tr.module))
        metrics = {}
        if self.on_epoch is not None:  # a tuner's running CV: reported, never used to choose
            metrics = tr.evaluate(self.loaders.valid, self.view)
        chosen = True  # patience 0: the latest weights are the ones that score the fold
        if self.loaders.stop is not None:
            metrics["stop_acc"] = tr.evaluate(self.loaders.stop, self.view)["val_acc"]
            chosen = self.stopper.step(broadcast_value(metrics["stop_acc"]))
            tr.should_stop = self.stopper.should_stop
        self.history.append({**stats, **metrics, "lr": tr.optimizer.param_groups[0]["lr"]})
        extra = "".join(f" {k} {metrics[k]:.4f}" for k in ("val_acc", "stop_acc") if k in metrics)
        say(f"fold {self.fold} epoch {tr.epoch}/{self.cfg.epochs}: loss {stats['loss']:.3f} "
            f"acc {stats.get('acc', 0):.3f}{extra} ({stats['samples_per_s']:.0f} img/s)")
        finished = tr.should_stop or tr.epoch >= self.cfg.epochs
        if is_main_process():
            # without early stopping the fold is scored by its last weights: best.pt is written once, at the end
            if chosen and (finished or self.loaders.stop is not None):
                save_checkpoint(self.best, {"model": tr.eval_model.state_dict(), "epoch": tr.epoch,
                                            "classes": self.classes})
            save_checkpoint(self.last, {"trainer": tr.state_dict(), "early_stopping": self.stopper.state_dict(),
                                        "history": self.history, "finished": finished})
        barrier()
        if self.on_epoch is not None:
            self.on_epoch(tr.epoch, metrics["val_acc"])


def _n_batches(n: int, cfg: LeavesConfig) -> int:
    """Optimizer steps per epoch, as :func:`make_loader` batches the training set (for the LR schedule)."""
    from pipelines.core.distributed import world

    per_rank = n // world()[1]
    return max(1, per_rank // min(cfg.batch_size, per_rank))


# ---------------------------------------------------------------------------------------------- output
def curves_figure(histories: dict[int, list[dict]], scores: dict[int, float]):
    """Training loss and accuracy per epoch (the inner split's or the tuner's per-epoch scores where they
    exist), and each fold's held-out accuracy, measured once at its last epoch, as a marker."""
    from pipelines.core.io import pyplot

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for fold, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        (line,) = ax_loss.plot(epochs, [h["loss"] for h in hist], label=f"fold {fold} train")
        ax_acc.plot(epochs, [h.get("acc", np.nan) for h in hist], color=line.get_color(), label=f"fold {fold} train")
        for key, style in (("val_acc", "--"), ("stop_acc", ":")):
            if any(key in h for h in hist):
                ax_acc.plot(epochs, [h.get(key, np.nan) for h in hist], style, color=line.get_color(),
                            label=f"fold {fold} {'valid' if key == 'val_acc' else 'inner split'}")
        if fold in scores and epochs:
            ax_acc.plot([epochs[-1]], [scores[fold]], "o", color=line.get_color(), label=f"fold {fold} held out")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle("learning curves (train with augmentation/mixup; held-out fold with EMA weights, once)")
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


# flags a resumed run takes from the command line (they change where it writes or how it reports, not what
# it trains); every other flag given with --resume must match the saved config
RESUME_FREE = ("progress", "workers", "resume", "out_dir", "runs_dir")


def open_run_dir(cfg: LeavesConfig) -> tuple[LeavesConfig, Path]:
    """A new run folder's path (created once the data has loaded), or the run ``--resume`` names and
    its saved config."""
    base = Path(cfg.runs_dir) / "leaves"
    if cfg.resume:
        from pipelines.core.paths import inside

        run_dir = Path(cfg.resume) if Path(cfg.resume).is_dir() else inside(base, cfg.resume, "--resume")
        if not (run_dir / "config.json").is_file():
            raise PipelineError(f"--resume: no run at {run_dir} (expected a config.json there)")
        saved = json.loads((run_dir / "config.json").read_text())
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
        from pipelines.core.io import atomic_write

        run_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (("config.json", dataclasses.asdict(cfg)), ("classes.json", {"classes": data.classes})):
            with atomic_write(run_dir / name) as fh:  # whole or absent (a resume trusts config.json)
                fh.write(dumps(content))
    say(f"{len(data.train)} train / {len(data.test)} test images, {len(data.classes)} classes, "
        f"{data.img_size} px, {cfg.model} on {device} x{world()[1]}; run {run_dir}")
    return cfg, run_dir, device, data, weights


def cross_validate_folds(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, run_dir: Path, device):
    """Train every fold (or ``--fold`` alone), then choose the test-time views cross-fitted on the OOF rows.

    Returns the CV result (OOF and test probabilities in the chosen views, per-fold accuracy), each fold's
    :func:`fit_fold` output, and the view choice (:func:`choose_tta`).
    """
    from features.symmetry import summary
    from pipelines.competitions.leaves.views import choose_tta
    from pipelines.core.cv import cross_validate

    fold_info: dict[int, dict] = {}

    def fit_predict(train_idx, valid_idx, fold):
        info = fit_fold(cfg, data, fold, train_idx, valid_idx, run_dir, device)
        fold_info[fold] = info
        say(f"fold {fold}: accuracy {accuracy(data.y[valid_idx], info['valid']):.4f} "
            f"(weights of epoch {info['epoch_used']} of {info['epochs']}, {info['train_seconds']:.0f} s training, "
            f"flips/turns: {info['symmetry'].describe()})")
        return info["valid"], info["test"]

    result = cross_validate(fit_predict, folds, data.y, accuracy,
                            only_folds=None if cfg.fold is None else [cfg.fold])
    say(summary({k: (info["symmetry"], info["symmetry_record"]) for k, info in fold_info.items()}))
    trained = np.isin(folds, sorted(fold_info))
    tta = choose_tta({k: info["valid_views"] for k, info in fold_info.items()}, data.y[trained], folds[trained])
    tta["views_tried"] = {k: info["views"] for k, info in fold_info.items()}
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
    scores = dict(zip(sorted(fold_info), result.fold_scores, strict=True))
    figures = {"curves": curves_figure({k: v["history"] for k, v in fold_info.items()}, scores),
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
                 "n_test": len(data.test), "img_size": data.img_size, "img_size_rule": data.size_rule},
        "symmetry": {str(k): {**v["symmetry_record"], "hflip": v["symmetry"].hflip, "vflip": v["symmetry"].vflip,
                              "rot90": v["symmetry"].rot90} for k, v in fold_info.items()},
        "schedule": {"epochs": {k: v["epochs"] for k, v in fold_info.items()},
                     "rule": "--epochs" if cfg.epochs else f"auto: about {cfg.steps} optimizer steps per fold within "
                                                           f"{EPOCH_RANGE[0]}..{EPOCH_RANGE[1]} epochs",
                     "passes_per_image": {k: v["epochs"] for k, v in fold_info.items()}},
        "classes": data.classes,
        "trained_folds": sorted(fold_info),
        "epoch_choice": epoch_choice(cfg, max(v["epochs"] for v in fold_info.values())),
        "fold_epochs_used": {k: v["epoch_used"] for k, v in fold_info.items()},
        "tta": {"views_tried": tta["views_tried"], "oof_accuracy_by_views": tta["oof_accuracy"],
                "views_per_fold": tta["per_fold"], "views_test": tta["test"],
                "rule": "views are the identity then the fold's kept flips and turns; each fold's rows use the "
                        "view count best on the other folds' rows; test: best on all"},
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
