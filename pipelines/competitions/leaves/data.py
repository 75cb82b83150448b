"""The leaves data: the folder (given, local, Kaggle download or synthetic), its two tables checked, the
training image size (from the flag, the backbone or the images), every image decoded once into a uint8
cache, and what a valid submission is.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.competitions.leaves import COMPETITION as LEAVES
from pipelines.competitions.leaves.config import COMPETITION, CPU_SIZES, SQUASH_ASPECT, STRETCH_SPAN, LeavesConfig, say
from pipelines.core.errors import PipelineError
from pipelines.core.records import REPO_ROOT

if TYPE_CHECKING:
    import torch

    from submissions.writer import SubmissionSpec

DEFAULT_DATA = LEAVES.default_data  # data/classify-leaves/ (resolve_data_dir reads it here)


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
    framing: str = "crop"  # how each image became the square: its centre square, or squashed whole (``frame``)
    framing_rule: str = ""  # why (goes into the record)
    pixel_range: tuple[int, int] = (0, 255)  # the training pixels' 0.1..99.9 % values, before any stretch
    stretched: bool = False  # whether that range was stretched onto 0..255 (``stretch``)
    stretch_rule: str = ""  # why (goes into the record)
    probe: object = None  # features.symmetry features of a sample of the training rows, computed once
    head_features: tuple | None = None  # (backbone key, every training row's pre-logits): ``train.head_features``


def resolve_data_dir(cfg: LeavesConfig) -> tuple[Path, str]:
    """The folder to read and where it came from: given, local, kaggle or synthetic."""
    if cfg.data_dir is not None:
        root = LEAVES.data_folder(cfg.data_dir)  # an empty path is refused there, for every competition
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
    """The shared CSV checks (``pipelines.core.tables``), then no blank cell in ``columns``, no image listed twice."""
    from pipelines.core.tables import check_unique, read_csv

    frame = read_csv(path, columns, dtype=str)
    blank = frame[columns].isna().any(axis=1)
    if blank.any():
        raise PipelineError(f"{path.name} row {int(np.flatnonzero(blank)[0]) + 2} has an empty {columns} value")
    check_unique(frame, "image", str(path))
    return frame


def image_paths(root: Path, table: pd.DataFrame, name: str) -> list[Path]:
    """Each row's image under ``root``, or under ``root/images/`` when the table names the bare file (``0.png``
    where Classify Leaves writes ``images/0.png``); a name that leaves the folder (absolute, ``..``) is refused
    naming its row, and a file found in neither place is one error at decoding, naming its path."""
    from pipelines.core.paths import inside

    def locate(row: int, image: str) -> Path:
        path, bare = inside(root, image, f"{name} row {row} image"), root / "images" / image
        return bare if not path.is_file() and bare.is_file() else path

    return [locate(i + 2, image) for i, image in enumerate(table["image"])]


def frame(cfg: LeavesConfig, sizes: np.ndarray) -> tuple[str, str]:
    """``crop`` (the centre square) or ``squash`` (the whole image resized to the square), and why: ``--framing``,
    else the median aspect of the training images' headers (``sizes``, width and height): past
    :data:`SQUASH_ASPECT` a centre square would drop more than a fifth of a typical image, so it is squashed."""
    if cfg.framing != "auto":
        return cfg.framing, f"--framing {cfg.framing}"
    from features.images import median_aspect

    aspect = median_aspect(sizes)
    if aspect <= SQUASH_ASPECT:
        return "crop", f"centre square (median aspect {aspect:.2f} <= {SQUASH_ASPECT})"
    return "squash", (f"whole image squashed to the square (median aspect {aspect:.2f} > {SQUASH_ASPECT}: a centre "
                      f"square would drop {1 - 1 / aspect:.0%} of a typical image)")


def stretch(cfg: LeavesConfig, train_images: torch.Tensor, test_images: torch.Tensor
            ) -> tuple[tuple[int, int], bool, str]:
    """Stretch both caches in place onto 0..255 when ``--stretch on``, or with ``auto`` where the training pixels'
    0.1..99.9 % values (no label read, like the size and the framing) span less than :data:`STRETCH_SPAN` of
    0..255; ``off`` (the default) keeps them. Returns that range, whether it was stretched, and why."""
    from features.images import pixel_range, stretch_

    lo, hi = pixel_range(train_images)
    span = (hi - lo) / 255
    on = span < STRETCH_SPAN if cfg.stretch == "auto" else cfg.stretch == "on"
    done = on and hi > lo  # a one-value set has no range to map onto 0..255
    what = "stretched onto 0..255" if done else f"not stretched: every pixel (0.1..99.9 %) is {lo}" if on else "kept"
    if cfg.stretch == "auto":
        rule = (f"pixel values {lo}..{hi} (0.1..99.9 %) span {span:.0%} of 0..255, "
                f"{'under' if on else 'at least'} {STRETCH_SPAN:.0%}: {what}")
    else:
        rule = f"--stretch {cfg.stretch}: {what} (pixel values {lo}..{hi}, 0.1..99.9 %)"
    if done:
        for images in (train_images, test_images):
            stretch_(images, lo, hi)
    return (lo, hi), done, rule


def auto_img_size(cfg: LeavesConfig, sizes: np.ndarray, device) -> tuple[int, str]:
    """The training size and the rule that chose it: ``--img-size``; else on CUDA the size the backbone was
    pretrained at (timm's ``input_size``: lite0 224, lite1 240, lite2 260; 224 for a model timm does not know),
    as a timm user would fine-tune it; else (CPU) the median shorter side of ``sizes`` (every training image's
    width and height, ``features.images.header_sizes``), a multiple of 16 within ``CPU_SIZES``: smaller images
    are upsampled, larger ones shrunk."""
    if cfg.img_size:
        return cfg.img_size, "--img-size"
    if device.type == "cuda":
        side = pretrained_side(cfg.model)
        return side or 224, f"{cfg.model}'s pretrained size" if side else "224 (no pretrained size known)"
    from features.images import median_side

    median = median_side(sizes)
    size = int(np.clip(round(median / 16) * 16, *CPU_SIZES))
    verb = "upsampled" if size > median else "shrunk" if size < median else "kept"
    return size, f"median shorter side {median} px over {len(sizes)} training images, {verb} to {size} px " \
                 f"(CPU range {CPU_SIZES[0]}..{CPU_SIZES[1]})"


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
    from features.images import decode_cache, header_sizes

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
    sizes = header_sizes(train_paths)  # (n, 2) from the headers: the size and the framing both read them
    framing, framing_rule = frame(cfg, sizes)
    size, rule = auto_img_size(cfg, sizes, device)
    fitted = fit_size_to_model(cfg.model, size)
    if fitted != size:
        rule += f", raised to {fitted} px ({cfg.model}'s minimum)"
    workers = max(1, min(8, os.cpu_count() or 1))
    spill = Path(cfg.runs_dir) / "leaves" / ".image-cache"
    squash = framing == "squash"
    if squash:
        say(f"images: {framing_rule}")
    images = [decode_cache(paths, fitted, workers, spill, squash=squash) for paths in (train_paths, test_paths)]
    span, stretched, stretch_rule = stretch(cfg, *images)
    if stretched:
        say(f"images: {stretch_rule}")
    return LeafData(root, source, train, test, classes, y, *images, fitted, rule, framing=framing,
                    framing_rule=framing_rule, pixel_range=span, stretched=stretched, stretch_rule=stretch_rule)


def submission_spec(test: pd.DataFrame, classes) -> SubmissionSpec:
    """What a submission must be: every test image once, each labelled with one of the training ``classes``."""
    from submissions.writer import SubmissionSpec

    return SubmissionSpec(COMPETITION, ["image", "label"], ids=test["image"], labels=set(classes), numeric=False)
