"""The leaves run's settings: :class:`LeavesConfig`, its command-line flags, their ranges and the checks made
before any work, and the automatic epoch count (the schedule is a setting resolved from the data size).

Every other leaves module reads a ``LeavesConfig``; this one imports none of them (``views`` lazily, for the
flip/turn flags), so it is the bottom of the folder. ``say`` lives here for the same reason: every module
prints through it, on rank 0 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.competitions.leaves import COMPETITION as LEAVES
from pipelines.core.errors import PipelineError
from pipelines.core.seed import SEED_SPACE

COMPETITION = LEAVES.name  # registered once, in this package's __init__
# CPU image size: the images' median side, small images upsampled to at least 96 px (efficientnet-lite0 at
# 64 px ends in 2x2 feature maps and loses ~8 points on small real images), large ones capped at 112 px
# (the 2-core CPU budget)
CPU_SIZES = (96, 112)
# how a non-square image becomes the square the backbone trains on (``--framing auto``): its centre square, unless the
# images' median long/short side ratio exceeds SQUASH_ASPECT, where the centre square would drop more than a fifth
# of each image (text lines, spectrograms, strips); then each whole image is resized to the square, every pixel kept
SQUASH_ASPECT = 1.25
# the pixel range (``--stretch auto``, opt-in): where the training images' 0.1..99.9 % pixel values span less than
# STRETCH_SPAN of 0..255 (a dim scan, digits stored as 0..16), that span is stretched linearly onto 0..255 for
# every image. Off by default: on the 8 px glyphs made dim it bought nothing (values 0..38: CV 0.9867 either way,
# test 0.996 against 0.992) or cost (0..16: CV 0.966 against 0.979, test 0.988 both); the fine-tuned network
# reads a narrow range as well as a stretched one. The record keeps the measured range either way
STRETCH_SPAN = 0.5
# default schedule (``--epochs auto``): about ``--steps`` optimizer steps per fold, within EPOCH_RANGE passes
# over each training image (docs/leaves.md: chosen on ELPV, the glyph set and the synthetic set: on ELPV 400
# steps, 10 passes, gave CV 0.768-0.780 against 0.755-0.764 at 300; capping at 6 passes lost 0.01 everywhere;
# 520 steps, 13 passes, gave test accuracy 0.809 / 0.799 / 0.794 at seeds 0-2 against 0.796 / 0.768 / 0.773,
# CV higher at every seed, once the fold processes had made the passes cheaper)
EPOCH_RANGE = (3, 13)
# ... but never fewer than ANNEAL_MIN_SHARE of ``--steps`` optimizer steps (208 of 520), whatever the cap: a small
# set's fold makes a few steps a pass, and 13 passes left it half trained (ELPV cut to 240 training cells, 5 steps
# a pass: 13 passes, 65 steps, test 0.726 and CV 0.654; 42 passes, 210 steps, 0.736 and CV 0.708). Only folds of
# fewer than 16 steps a pass (under about 512 training rows) train longer; every development set is unchanged
# --anneal-at ACC (default ANNEAL_AT; 0: off): a fold whose training accuracy over an epoch (the augmented batches, as
# trained) reaches ACC decays its LR from where it is to the floor over the next ANNEAL_SHARE of the epochs done (at
# least one) and ends there. At 0.99 (after ANNEAL_MIN_SHARE of the steps) the 8 px glyphs ran in 214-220 s instead
# of 286-307 s at the same test accuracy (1.000) and CV (0.991 / 0.995 against 0.993 at seeds 0 / 1); the synthetic
# set and ELPV train as before (ELPV's folds never fit their rows: training accuracy 0.80-0.905). 0.97 gave up
# 0.004-0.005 of CV for 16-35 % of the time (docs/leaves.md, "Folds that have fit their rows", "... at 0.99")
ANNEAL_AT = 0.99
ANNEAL_SHARE = 0.25
# ... and only after ANNEAL_MIN_SHARE of ``--steps`` optimizer steps (208 of 520): a small set's fold, a few steps an
# epoch, gets every batch right within a few epochs, long before it has learnt its rows (180 wide images: CV 0.861
# when its folds annealed after epochs 3-5, 0.917 / 0.972 / 1.000 trained for 7 / 9 / 13 epochs of 3 steps)
ANNEAL_MIN_SHARE = 0.4
# batch size when --batch-size is not given: 32 on CPU; 128 on CUDA, `make bench`'s batch, so the GPU is fed. On
# an H200 at 224 px, batch 32 trained at 1,191 img/s (23 % of the loop-only 5,111 at batch 128), batch 128 at
# 4,355 (85 %), with the same ELPV test accuracy (0.799 at seed 0; docs/leaves.md, "GPU")
BATCH_SIZES = {"cpu": 32, "cuda": 128}
# inference batch per training batch: twice as large feeds a GPU; on a 2-core CPU the training batch itself
# predicted 10-25 % faster than twice it (efficientnet-lite0, 96 and 112 px: 391-428 against 341-351 img/s)
EVAL_BATCH_FACTOR = {"cpu": 1, "cuda": 2}
# torch.compile (inductor) is opt-in on a CPU (``--compile``). On 2 cores a first run (empty inductor cache, as on
# a fresh machine) trained ELPV faster eager with its folds side by side on every CPU measured: 354 against 372 s
# on a Xeon with AMX, 240 against 351 s on an AMD EPYC with AVX-512 BF16, where the compiled model was not even
# faster per image (205-250 against 250-265 img/s eager). Only a warm cache on the AMX Xeon won (329 against 369 s),
# which a user re-running one set may want (docs/leaves.md, "Compiling on CPU")
# a CPU run trains its folds side by side, one process each (``auto_fold_jobs``), when its planned training
# reaches this many images: the processes cost a few seconds to start (a fork server imports torch and timm for
# them; the bound was set when each imported them itself, not re-measured since), and one thread per fold trains
# 1.15-1.3x more images per second on 2 cores than both cores on one fold (small feature maps split badly between
# threads; docs/leaves.md, "Folds side by side")
FOLD_JOBS_MIN_IMAGES = 8_000


@dataclass
class LeavesConfig:
    """Every setting of a run; CLI flags override the defaults and the resolved config is saved."""

    data_dir: str | None = None
    model: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # offline ImageNet weights (models/pretrained.py) when the backbone has them
    pretrained_file: str | None = None
    img_size: int | None = None  # None: 224 on CUDA; on CPU the images' median side within CPU_SIZES
    framing: str = "auto"  # crop (centre square), squash (whole image to the square), auto: SQUASH_ASPECT decides
    stretch: str = "off"  # on: the pixel range stretched onto 0..255, off: kept, auto: STRETCH_SPAN decides
    epochs: int | None = None  # None: from the data size (auto_epochs), resolved and saved before training
    steps: int = 520  # the automatic schedule's optimizer steps per fold (ignored when epochs is given)
    batch_size: int | None = None  # None: BATCH_SIZES by device, resolved and saved before training
    lr: float = 1e-3
    # the pretrained model's new classifier: the linear probe of the fold's frozen features (LP-FT), or zero.
    # With --freeze 4 it made ELPV 1.1x faster than zero + --freeze 3 at the same CV (docs/leaves.md, "LP-FT")
    head_init: str = "probe"
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
    freeze: int = 4  # leading layer groups (stem, then stages) kept at their pretrained values; 0 trains all
    anneal_at: float = ANNEAL_AT  # training accuracy at which a fold's schedule decays and ends early (0: off)
    patience: int = 0  # 0: fixed epochs, scored at the last; N: early stopping on an inner split of the train folds
    folds: int = 3
    fold: int | None = None  # train only this fold
    hflip: str = "auto"  # probability of a horizontal flip; auto: kept if the training rows keep labels under it
    vflip: str = "auto"  # likewise, vertical
    rot90: str = "auto"  # random quarter turns: on, off or auto
    tta: int = 4  # test-time views tried: the identity, then the kept flips and turns; the count kept on OOF
    workers: int = -1  # -1: 0 on small CPUs, else up to 8
    compile: bool = False  # torch.compile the model (opt-in; a CPU compile needs a C++ compiler: check_compile)
    fold_jobs: int | None = None  # folds trained at once, a process each (None: auto_fold_jobs), resolved likewise
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
      f"about --steps optimizer steps per fold, {EPOCH_RANGE[0]}..{EPOCH_RANGE[1]} epochs, never under "
      f"{ANNEAL_MIN_SHARE * 100:.0f} %% of --steps)")
    a("--batch-size", type=int, help="images per optimizer step (default: "
      + ", ".join(f"{n} on {k.upper()}" for k, n in BATCH_SIZES.items()) + ")")
    for name in ("steps", "patience", "folds", "tta", "workers", "freeze"):
        a(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    a("--hflip", default=d.hflip, help="horizontal flip probability (default auto: decided from the training rows)")
    a("--vflip", default=d.vflip, help="vertical flip probability (default auto: decided from the training rows)")
    a("--rot90", default=d.rot90, choices=["auto", "on", "off"], help="random quarter turns (default auto)")
    a("--framing", default=d.framing, choices=["auto", "crop", "squash"], help="non-square images: the centre "
      f"square or the whole image resized to the square (default auto: squash past a median aspect of {SQUASH_ASPECT})")
    a("--stretch", default=d.stretch, choices=["auto", "on", "off"], help="stretch the training images' pixel range "
      f"(0.1..99.9 %%) onto 0..255: on, auto (where it spans less than {STRETCH_SPAN * 100:.0f} %% of it) or off "
      "(default: dim sets gained nothing from it)")
    for name in ("lr", "head_lr_mult", "weight_decay", "warmup_epochs", "grad_clip", "label_smoothing", "mixup",
                 "cutmix", "mix_prob", "crop_scale", "rotation", "jitter", "ema_decay"):
        a(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    a("--anneal-at", type=float, default=d.anneal_at, metavar="ACC", help="end a fold early once it fits its rows: "
      f"when an epoch's training accuracy reaches ACC, the LR decays over the next {ANNEAL_SHARE:.0%}% of the epochs "
      f"done and the fold ends; never before {ANNEAL_MIN_SHARE:.0%}% of --steps optimizer steps (default "
      f"{ANNEAL_AT:g}; 0: every planned epoch)")
    a("--head-init", default=d.head_init, choices=["zero", "probe"],
      help="a pretrained model's new classifier starts at zero or at the linear probe of the fold's training rows")
    a("--auto-augment", default=d.auto_augment, choices=["trivial", "rand", "imagenet", "none"])
    a("--fold", type=int, help="train only this fold")
    a("--compile", action=argparse.BooleanOptionalAction, default=d.compile, help="torch.compile the model (default "
      "off: a first run on 2 CPU cores trained faster eager with its folds side by side; on a CPU it needs a C++ "
      "compiler)")
    a("--fold-jobs", type=int, help="folds trained side by side on a CPU, each in its own process with its share "
      f"of the cores (default: every fold at once for a CPU run of at least {FOLD_JOBS_MIN_IMAGES:,} trained images "
      "that is not compiled, else 1)")
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
                "ema_decay": (0, 0.99999), "anneal_at": (0, 1)}


def check_config(cfg: LeavesConfig) -> None:
    """Refuse settings that cannot train, and output folders that cannot be written, before any work and
    before a run folder exists."""
    from pipelines.competitions.leaves.views import flag_overrides
    from submissions.writer import check_writable_dir

    for name, low in (("epochs", 1), ("steps", 1), ("batch_size", 1), ("folds", 2), ("tta", 1),
                      ("patience", 0), ("workers", -1), ("freeze", 0), ("fold_jobs", 1)):
        if getattr(cfg, name) is not None and getattr(cfg, name) < low:
            raise PipelineError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(cfg, name)}")
    for name, (low, high) in FLOAT_RANGES.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low <= value <= high):
            raise PipelineError(f"--{name.replace('_', '-')} must be a number in [{low:g}, {high:g}], got {value}")
    if cfg.seed is not None and not 0 <= cfg.seed < SEED_SPACE:
        raise PipelineError(f"--seed must be in 0..{SEED_SPACE - 1}, got {cfg.seed}")
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



def auto_batch_size(cfg: LeavesConfig, device) -> LeavesConfig:
    """``cfg`` with its batch size resolved for ``device`` (:data:`BATCH_SIZES`) when the flag left it out."""
    if cfg.batch_size is not None:
        return cfg
    return dataclasses.replace(cfg, batch_size=BATCH_SIZES[_kind(device)])


def eval_batch_size(cfg: LeavesConfig, device) -> int:
    """Images per prediction batch on ``device``: :data:`EVAL_BATCH_FACTOR` x the (resolved) training batch."""
    return auto_batch_size(cfg, device).batch_size * EVAL_BATCH_FACTOR[_kind(device)]


def _kind(device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def check_compile(cfg: LeavesConfig, device, compiler: str | None = "auto") -> None:
    """Refuse ``--compile`` on a CPU where no C++ compiler can build inductor's kernels (``compiler``: its path,
    ``auto`` asks inductor's own search, :func:`pipelines.core.training.cpp_compiler`), in one line before the data
    loads: a compile without one would fail only after tracing (54 s lost, then eager)."""
    if not cfg.compile or device.type != "cpu":
        return
    from pipelines.core.training import cpp_compiler

    if (cpp_compiler() if compiler == "auto" else compiler) is None:
        raise PipelineError("--compile on a CPU needs a C++ compiler for inductor's kernels and none works here "
                            "(set $CXX or install g++), or leave --compile out")


def auto_fold_jobs(cfg: LeavesConfig, device, n_train: int, cores: int | None = None) -> LeavesConfig:
    """``cfg`` with ``fold_jobs`` resolved when the flag left it out: every fold at once (at most one more than
    the cores) for a CPU run of one process whose planned training reaches :data:`FOLD_JOBS_MIN_IMAGES` and that
    is not compiled (each process would compile again); 1 otherwise (CUDA, DDP, ``--fold``, a tuner's trial).
    Saved in config.json: a fold's arithmetic depends on its thread count, so a resume keeps it."""
    from joblib import cpu_count

    from pipelines.core.distributed import world

    one_process_cpu = device.type == "cpu" and world()[1] == 1
    if cfg.fold_jobs is not None:
        if cfg.fold_jobs > 1 and not one_process_cpu:
            raise PipelineError("--fold-jobs is for a CPU run in one process (not CUDA, not torchrun)")
        return cfg
    cores = cpu_count() if cores is None else cores
    if (not one_process_cpu or cfg.fold is not None or cfg.compile or cores < 2
            or planned_images(cfg, n_train) < FOLD_JOBS_MIN_IMAGES):
        return dataclasses.replace(cfg, fold_jobs=1)
    return dataclasses.replace(cfg, fold_jobs=min(cfg.folds, cores + 1))


def planned_images(cfg: LeavesConfig, n_train: int) -> int:
    """The images a run will train on: folds trained (one with ``--fold``) x passes x rows per fold."""
    n_fit = n_train * (cfg.folds - 1) // cfg.folds
    folds = 1 if cfg.fold is not None else cfg.folds
    return folds * n_fit * (cfg.epochs or auto_epochs(n_fit, cfg.batch_size, cfg.steps))


def anneal_epochs(epochs_done: int) -> int:
    """Epochs of the decay that ends a fold which fit its rows after ``epochs_done``: :data:`ANNEAL_SHARE` of them,
    at least one."""
    return max(1, math.ceil(ANNEAL_SHARE * epochs_done))


def auto_epochs(n_fit: int, batch_size: int, steps: int = LeavesConfig.steps) -> int:
    """Epochs from the data size: about ``steps`` optimizer steps per fold, within ``EPOCH_RANGE`` passes over
    each image (a few thousand images get several passes, tens of thousands the minimum), and never fewer than
    ``ANNEAL_MIN_SHARE`` of ``steps`` optimizer steps (a few hundred images get more than the cap's passes)."""
    steps_per_epoch = max(1, n_fit // batch_size)
    floor = math.ceil(ANNEAL_MIN_SHARE * steps / steps_per_epoch)  # a small set's fold: at least 208 steps
    return int(max(np.clip(round(steps / steps_per_epoch), *EPOCH_RANGE), floor))



def say(message: str) -> None:
    from pipelines.core.distributed import is_main_process

    if is_main_process():
        print(message, flush=True)
