"""An orientation-sensitive image set: classes that are mirror images and turns of each other.

Arrows (left, right, up, down), the letters b, d, p, q and the digits 6 and 9, rendered in the DejaVu and
STIX fonts that matplotlib ships (so nothing is downloaded), each image with a random font, size, position,
small tilt (+-12 degrees), colours, blur and noise. Every element of the square's symmetry group except the
identity turns some class into another: a horizontal flip swaps left/right and b/d, a vertical flip up/down
and b/p, a half turn 6/9 and b/q, a quarter turn left/up. A pipeline that flips or turns its training
images by default cannot tell them apart; one that decides its symmetries from the data keeps none.

Layout written: ``images/<i>.png``, ``train.csv`` (``image,label``), ``test.csv`` (``image``) and, for
benchmarks only, ``test_labels.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

VERSION = 1
CLASSES = ["arrow_left", "arrow_right", "arrow_up", "arrow_down", "b", "d", "p", "q", "6", "9"]
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf"]


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _arrow(rng: np.random.Generator, side: int) -> list[tuple[float, float]]:
    """A right-pointing arrow polygon, centred on the origin, ``side`` px long, random proportions."""
    half, shaft = side / 2, side * rng.uniform(0.08, 0.16)
    head_len, head_w = side * rng.uniform(0.3, 0.45), side * rng.uniform(0.25, 0.4)
    neck = half - head_len
    return [(-half, -shaft), (neck, -shaft), (neck, -head_w), (half, 0), (neck, head_w), (neck, shaft), (-half, shaft)]


def draw_glyph(label: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of ``label`` (a class of :data:`CLASSES`)."""
    scale = 4  # drawn large, then shrunk: smooth edges at any size
    big = size * scale
    bg = int(rng.integers(0, 256))
    ink = (bg + int(rng.integers(90, 166))) % 256
    tint = rng.uniform(0.8, 1.2, 3)
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    glyph_side = big * rng.uniform(0.5, 0.8)
    if label.startswith("arrow_"):
        turn = {"arrow_right": 0, "arrow_down": 90, "arrow_left": 180, "arrow_up": 270}[label]
        pts = np.array(_arrow(rng, glyph_side))
        c, s = np.cos(np.radians(turn)), np.sin(np.radians(turn))
        pts = pts @ np.array([[c, s], [-s, c]]) + big / 2
        draw.polygon([tuple(p) for p in pts], fill=255)
    else:
        font = ImageFont.truetype(str(font_dir() / FONTS[int(rng.integers(len(FONTS)))]), int(glyph_side))
        draw.text((big / 2, big / 2), label, fill=255, font=font, anchor="mm")
    layer = layer.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BICUBIC,
                         translate=tuple(rng.uniform(-0.12, 0.12, 2) * big))
    mask = np.asarray(layer.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64) / 255
    pixels = bg + (ink - bg) * mask
    rgb = np.clip(pixels[..., None] * tint + rng.normal(0, rng.uniform(2, 12), (size, size, 3)), 0, 255)
    img = Image.fromarray(rgb.astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))


def generate_glyphs(root: str | Path, n_train: int = 1000, n_test: int = 400, size: int = 64, seed: int = 0,
                    classes: list[str] | None = None) -> Path:
    """Write a balanced glyph set (``classes``, default all of :data:`CLASSES`) in the Kaggle layout under
    ``root``; returns ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n, classes = n_train + n_test, classes or CLASSES
    labels = np.array([classes[i % len(classes)] for i in range(n)])[rng.permutation(n)]
    names = []
    for i, label in enumerate(labels):
        name = f"images/{i}.png"
        draw_glyph(str(label), size, rng).save(root / name)
        names.append(name)
    frame = pd.DataFrame({"image": names, "label": labels})
    frame.iloc[:n_train].to_csv(root / "train.csv", index=False)
    frame.iloc[n_train:][["image"]].to_csv(root / "test.csv", index=False)
    frame.iloc[n_train:].to_csv(root / "test_labels.csv", index=False)
    return root
