"""Decoding every image once into a uint8 cache (batches of it: ``features.batches``).

Every image is decoded once per run, resized so its shorter side is the training size and centre-cropped
to a square (what prediction sees too), and kept as one uint8 tensor of shape (N, 3, S, S): on a 2-core
CPU decoding JPEGs every epoch would cost as much as the network, and a GPU is fed by one gather per batch
instead of a worker pool. The cache lives in RAM up to ``cache_bound()`` (half the memory free when the run
starts); a larger set is written once to a memory-mapped file and streamed from it. Augmentation happens on
the device, on whole batches (``features.augment``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipelines.core.errors import PipelineError


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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise PipelineError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


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


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or 0-255 float) NCHW -> float, scaled to [0, 1] and standardised per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def header_sizes(paths: Sequence[str | Path]) -> np.ndarray:
    """(n, 2) width and height of every readable image, from the headers only (no pixel is decoded)."""
    sizes = []
    for p in paths:
        try:
            with Image.open(p) as img:
                sizes.append(img.size)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            continue  # reported properly when the image is loaded
    if not sizes:
        raise PipelineError(f"none of the {len(paths)} training images could be read (first: {paths[0]})")
    return np.asarray(sizes)


def median_side(sizes: np.ndarray) -> int:
    """Median shorter side of ``header_sizes``."""
    return int(np.median(sizes.min(1)))


def median_aspect(sizes: np.ndarray) -> float:
    """Median long side / short side of ``header_sizes``: 1 for square images, 2 for any mix of 2:1 and 1:2."""
    return float(np.median(sizes.max(1) / sizes.min(1)))


def pixel_range(images: torch.Tensor, quantiles: tuple[float, float] = (0.001, 0.999), sample: int = 1 << 20,
                seed: int = 0) -> tuple[int, int]:
    """The low and high pixel values of a uint8 cache (every channel together, so colours keep their balance):
    its ``quantiles``, read on up to ``sample`` pixels drawn at random (fixed ``seed``), so a few hot pixels or
    a thin border do not set the range."""
    flat = images.reshape(-1)
    if flat.numel() > sample:
        idx = torch.from_numpy(np.random.default_rng(seed).integers(0, flat.numel(), sample))
        flat = flat[idx]
    lo, hi = np.quantile(flat.numpy(), quantiles)
    return int(lo), int(np.ceil(hi))


def stretch_(images: torch.Tensor, lo: int, hi: int, chunk: int = 4096) -> torch.Tensor:
    """Map ``lo..hi`` linearly onto 0..255 in place (values outside clipped), through a 256-entry lookup table,
    a chunk of images at a time (a memory-mapped cache is rewritten where it lies)."""
    table = np.clip(np.round((np.arange(256) - lo) * 255 / max(hi - lo, 1)), 0, 255).astype(np.uint8)
    arr = images.numpy()
    for i in range(0, len(arr), chunk):
        arr[i:i + chunk] = table[arr[i:i + chunk]]
    return images


def cache_bound() -> int:
    """Bytes the decoded images may take in RAM: half the memory available now (4 GiB if unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def centre_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size`` x ``size`` crop of a CHW image whose shorter side is ``size``."""
    top, left = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
    return img[:, top:top + size, left:left + size]


def square(img: Image.Image, size: int, squash: bool = False) -> torch.Tensor:
    """A ``size`` x ``size`` CHW uint8 tensor of ``img``: its centre square (shorter side resized to ``size``), or
    with ``squash`` the whole image resized to the square, every pixel kept and the aspect given up."""
    if squash:
        return to_uint8_tensor(img.resize((size, size), Image.Resampling.BICUBIC))
    return centre_square(to_uint8_tensor(resize_shorter(img, size)), size)


def decode_cache(paths: Sequence[str | Path], size: int, workers: int = 4, spill_dir: str | Path | None = None,
                 bound: int | None = None, squash: bool = False) -> torch.Tensor:
    """Decode ``paths`` once into a (N, 3, size, size) uint8 tensor: shorter side ``size``, centre square (with
    ``squash``: each whole image resized to the square, :func:`square`).

    In RAM up to ``bound`` bytes (:func:`cache_bound`); above it in a memory-mapped ``.npy`` under
    ``spill_dir``, unlinked once mapped (read back from the page cache or the disk, batch by batch).
    """
    n = len(paths)
    need, bound = n * 3 * size * size, cache_bound() if bound is None else bound
    if need <= bound or spill_dir is None:
        out = np.empty((n, 3, size, size), np.uint8)
    else:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(spill_dir).free
        if free < need + (64 << 20):  # a memory map on a full disk dies of SIGBUS, with no message at all
            raise PipelineError(f"the decoded images need {need / 2**30:.1f} GiB on disk under {spill_dir} (more "
                                f"than half the free RAM), but only {free / 2**30:.1f} GiB is free there")
        fd, name = tempfile.mkstemp(suffix=".npy", dir=spill_dir)
        os.close(fd)
        out = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        os.unlink(name)  # the mapping stays valid; nothing is left behind however the run ends

    def one(i: int) -> None:
        out[i] = square(load_rgb(paths[i]), size, squash).numpy()

    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes outside the GIL
        list(pool.map(one, range(n)))
    return torch.from_numpy(out)
