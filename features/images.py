"""Image side of the toolkit: PIL loading, torchvision.transforms.v2 pipelines, dataset and sampler.

Images are decoded once, resized so the shorter side is the training size, and kept in memory as
uint8 tensors: on a 2-core CPU decoding JPEGs every epoch would cost as much as the network. The
sampler hands every sample a seed derived from (run seed, epoch, index); the dataset augments on a fork
of torch's RNG seeded with it, so augmentation is the same whatever the worker count, with persistent workers,
and after a ``--resume`` -- which is what makes a killed and resumed run bit-identical on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from pipelines.core.errors import PipelineError

AUTO_AUGMENT = ("trivial", "rand", "imagenet", "none")


def load_rgb(path: str | Path) -> Image.Image:
    """Open any PIL mode as RGB; transparent pixels (RGBA, LA, palette) are composited onto white."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(canvas, rgba).convert("RGB")
            if img.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit / float grayscale: rescale to 8 bit
                arr = np.asarray(img, dtype=np.float64)
                span = max(arr.max() - arr.min(), 1e-9)
                img = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise PipelineError(f"cannot read image {path}: {type(err).__name__}") from err


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (aspect kept)."""
    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def load_images(paths: Sequence[str | Path], size: int, workers: int = 4) -> list[torch.Tensor]:
    """Decode ``paths`` once into CHW uint8 tensors, shorter side ``size``; the first bad file raises."""

    def one(p):
        return to_uint8_tensor(resize_shorter(load_rgb(p), size))

    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes outside the GIL
        return list(pool.map(one, paths))


def median_side(paths: Sequence[str | Path], sample: int = 64) -> int:
    """Median shorter side of (a sample of) the images, read from headers only."""
    sides = []
    for p in list(paths)[:sample]:
        try:
            with Image.open(p) as img:
                sides.append(min(img.size))
        except (OSError, UnidentifiedImageError):
            continue  # reported properly when the image is loaded
    return int(np.median(sides)) if sides else 224


def train_transform(
    size: int, mean: Sequence[float], std: Sequence[float], *, auto_augment: str = "trivial",
    scale: tuple[float, float] = (0.35, 1.0), rotation: float = 30.0, jitter: float = 0.3,
) -> v2.Compose:
    """Random resized crop, flips, rotation, colour jitter and an auto-augment policy, on uint8 CHW."""
    if auto_augment not in AUTO_AUGMENT:
        raise PipelineError(f"unknown --auto-augment {auto_augment!r}; choose one of {', '.join(AUTO_AUGMENT)}")
    policy = {
        "trivial": [v2.TrivialAugmentWide()],
        "rand": [v2.RandAugment(num_ops=2, magnitude=9)],
        "imagenet": [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)],
        "none": [],
    }[auto_augment]
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        *([v2.RandomRotation(rotation)] if rotation else []),
        *([v2.ColorJitter(jitter, jitter, jitter, 0.02)] if jitter else []),
        *policy,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the shorter side and centre-crop to ``size``, then normalise."""
    return v2.Compose([
        v2.Resize(size, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


TTA_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hvflip": lambda x: x.flip(-1).flip(-2),
}


def tta_views(n: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The first ``n`` test-time views of a batch (identity, horizontal, vertical, both flips)."""
    return list(TTA_VIEWS.values())[: max(1, min(n, len(TTA_VIEWS)))]


class ImageDataset(Dataset):
    """In-memory images with integer labels (``-1`` when unlabelled) and one transform.

    ``dataset[i]`` or ``dataset[(i, seed)]``: with a seed, the transform runs on a fork of torch's RNG
    seeded with it, so the augmentation of sample ``i`` depends only on the seed (see :class:`SeededSampler`)
    and the caller's RNG state is left as it was.
    """

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[int] | None, transform: Callable):
        self.images, self.transform = images, transform
        self.labels = np.full(len(images), -1, dtype=np.int64) if labels is None else np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        label = int(self.labels[index])
        if seed is None:
            return self.transform(self.images[index]), label
        # torchvision's random transforms draw from torch's global RNG: seed a fork of it, so the caller's
        # stream (dropout, mixup, the next epoch's order) is the same whether loading ran here or in a worker
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(self.images[index]), label


class SeededSampler(Sampler):
    """Shuffled (or ordered) indices, sharded over DDP ranks, each paired with a per-sample seed.

    Like ``DistributedSampler`` (which it wraps when ``world_size > 1``), call ``set_epoch`` before
    each epoch; the order and every seed are a function of ``(seed, epoch)`` only.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, drop_last=False):
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            inner = DistributedSampler(range(self.n), self.world_size, self.rank, shuffle=self.shuffle,
                                       seed=self.seed, drop_last=self.drop_last)
            inner.set_epoch(self.epoch)
            return list(inner)
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = (self.seed * 1_000_003 + self.epoch * 7_919) % (2**31)
        for i in self._indices():
            yield i, (base + i * 104_729) % (2**63 - 1)

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        return self.n // self.world_size if self.drop_last else math.ceil(self.n / self.world_size)
