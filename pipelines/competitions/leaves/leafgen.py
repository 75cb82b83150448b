"""A synthetic "Classify Leaves" set: procedural leaves in the Kaggle layout, deterministic per seed.

No machine here reaches Kaggle, so the pipeline, ``make leaves`` and the tests run on this. The task
is meant to be genuinely visual: species differ in outline (lobes, aspect, serration, tip, base),
venation (pinnate, palmate, parallel) and colour, but colours are shared between species and every
image has a random rotation, scale, position, lighting, background and blur. A linear model on raw
pixels therefore stays far below a CNN (``benchmarks/leaves_separability.py`` shows both figures).

Layout written: ``images/<i>.jpg``, ``train.csv`` (``image,label``), ``test.csv`` (``image``) and,
for benchmarks only, ``test_labels.csv`` (the hidden truth, which the real competition lacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

VERSION = 1  # bump when the drawing changes: cached synthetic sets are keyed by it
GREEN, DARK, YELLOW, RED = (70, 140, 50), (35, 95, 45), (150, 165, 55), (165, 70, 40)


@dataclass(frozen=True)
class Species:
    """Shape, venation and colour of one species; each image jitters these by a few percent."""

    name: str
    aspect: float  # width / length
    colour: tuple[int, int, int]
    lobes: int = 0  # number of lobes (0: entire margin)
    lobe_depth: float = 0.0
    teeth: int = 0  # serration teeth round the margin
    tooth_depth: float = 0.0
    tip: float = 0.0  # how drawn-out the apex is
    notch: float = 0.0  # heart-shaped base
    egg: float = 0.0  # > 0 widest towards the apex (obovate), < 0 towards the base (ovate)
    veins: str = "pinnate"  # pinnate | palmate | parallel
    vein_count: int = 5
    stalk: float = 0.25  # petiole length relative to the blade


SPECIES: tuple[Species, ...] = (
    Species("ovata", 0.6, GREEN, tip=0.25, egg=-0.2, vein_count=6),
    Species("lanceolata", 0.28, GREEN, teeth=36, tooth_depth=0.05, tip=0.35, vein_count=8),
    Species("palmata", 0.95, RED, lobes=5, lobe_depth=0.5, veins="palmate", stalk=0.5),
    Species("triloba", 0.9, GREEN, lobes=3, lobe_depth=0.55, veins="palmate", stalk=0.4),
    Species("cordata", 0.85, DARK, notch=0.45, tip=0.45, veins="palmate", vein_count=5),
    Species("rotunda", 0.95, YELLOW, teeth=14, tooth_depth=0.1, vein_count=4, stalk=0.45),
    Species("quercina", 0.55, DARK, lobes=9, lobe_depth=0.28, vein_count=5, stalk=0.1),
    Species("serrata", 0.5, RED, teeth=22, tooth_depth=0.08, tip=0.15, vein_count=7),
    Species("obovata", 0.55, YELLOW, egg=0.35, vein_count=5, stalk=0.1),
    Species("graminea", 0.13, DARK, tip=0.2, veins="parallel", vein_count=3, stalk=0.0),
    Species("septemloba", 0.95, YELLOW, lobes=7, lobe_depth=0.6, veins="palmate", stalk=0.35),
    Species("acuminata", 0.45, GREEN, tip=0.9, teeth=60, tooth_depth=0.025, vein_count=6),
)


def outline(sp: Species, n: int = 360) -> np.ndarray:
    """Blade outline in leaf coordinates: base at the origin, apex at (0, 1); ``(n, 2)`` points."""
    theta = np.linspace(-math.pi, math.pi, n, endpoint=False)  # 0 points to the apex
    a = sp.aspect
    r = 1.0 / np.sqrt(np.cos(theta) ** 2 + (np.sin(theta) / a) ** 2)  # ellipse, semi-axes 1 and a
    r = r * (1 + sp.egg * np.cos(theta))
    r = r * (1 + sp.tip * np.exp(-((theta / 0.22) ** 2)))
    base = np.abs(np.abs(theta) - math.pi)
    r = r * (1 - sp.notch * np.exp(-((base / 0.35) ** 2)))
    if sp.lobes:
        r = r * (1 - sp.lobe_depth * (0.5 - 0.5 * np.cos(sp.lobes * theta)) ** 0.7)
    if sp.teeth:
        saw = (theta * sp.teeth / (2 * math.pi)) % 1.0  # sawtooth: asymmetric teeth pointing apex-wards
        r = r * (1 - sp.tooth_depth * saw)
    x, y = r * np.sin(theta), r * np.cos(theta)
    return np.stack([x, y - y.min()], axis=1) / np.ptp(y)  # length 1, base at y=0


def _jitter(sp: Species, rng: np.random.Generator) -> Species:
    def j(v, s=0.08):
        return v * float(rng.uniform(1 - s, 1 + s))

    return replace(sp, aspect=j(sp.aspect), lobe_depth=j(sp.lobe_depth), tooth_depth=j(sp.tooth_depth),
                   tip=j(sp.tip, 0.15), notch=j(sp.notch), egg=j(sp.egg, 0.2))


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """Random two-colour gradient with soft blobs: paper, soil, grass, stone."""
    c0, c1 = rng.uniform(40, 235, 3), rng.uniform(40, 235, 3)
    t = np.linspace(0, 1, size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]) / math.sqrt(2) + 0.5
    img = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    img += rng.normal(0, rng.uniform(2, 12), img.shape)
    bg = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(0, 6))):
        (cx, cy), rad = rng.uniform(0, size, 2), rng.uniform(size * 0.03, size * 0.15)
        colour = tuple(int(v) for v in rng.uniform(30, 230, 3))
        draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=colour)
    return bg.filter(ImageFilter.GaussianBlur(size / 60))


def render_leaf(sp: Species, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of species ``sp``: jittered shape, random pose, lighting, background and blur."""
    big = size * 2  # draw at 2x, then downsample: anti-aliased edges and veins
    sp = _jitter(sp, rng)
    pts = outline(sp)
    scale = big * rng.uniform(0.45, 0.75)
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = big / 2 + rng.uniform(-0.12, 0.12, 2) * big

    def place(p: np.ndarray) -> list[tuple[float, float]]:
        q = (np.asarray(p, float) - [0, 0.5]) * scale @ rot.T + centre
        return [tuple(v) for v in q]

    colour = np.array(sp.colour, float) * rng.uniform(0.85, 1.15, 3)
    leaf_rgb = tuple(int(v) for v in np.clip(colour, 0, 255))
    vein_rgb = tuple(int(v) for v in np.clip(colour * 1.45 + 25, 0, 255))

    img = _background(big, rng)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(place(pts), fill=255)
    blade = Image.new("RGB", (big, big), leaf_rgb)
    veins = ImageDraw.Draw(blade)
    width = max(1, round(big / 90))
    for seg in _vein_segments(sp, pts):
        veins.line(place(seg), fill=vein_rgb, width=width)
    img.paste(blade, (0, 0), mask)
    if sp.stalk > 0:
        ImageDraw.Draw(img).line(place([[0, 0], [0, -sp.stalk]]), fill=vein_rgb, width=width * 2)

    arr = np.asarray(img, float) * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25, 3)  # lighting, colour cast
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.LANCZOS)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, size / 100)))


def _vein_segments(sp: Species, pts: np.ndarray) -> list[np.ndarray]:
    """Midrib plus lateral veins (pinnate), rays from the base (palmate) or long parallel lines."""
    tip = pts[np.argmax(pts[:, 1])]
    segs = [np.array([[0.0, 0.0], tip])]
    reach = 1.2 * max(sp.aspect, 0.2)
    if sp.veins == "pinnate":
        for t in np.linspace(0.15, 0.8, sp.vein_count):
            for side in (-1, 1):
                segs.append(np.array([[0, t], [side * reach, t + 0.6 * reach]]))
    elif sp.veins == "palmate":
        n = max(sp.lobes, sp.vein_count)
        for k in range(1, n // 2 + 1):
            ang = k * (2 * math.pi / max(n, 3)) if sp.lobes else k * 0.5
            for side in (-1, 1):
                segs.append(np.array([[0, 0.05], [side * math.sin(ang) * 1.2, 0.05 + math.cos(ang) * 1.2]]))
    else:  # parallel
        for off in np.linspace(-0.6, 0.6, sp.vein_count) * sp.aspect:
            segs.append(np.array([[off, 0.0], [off * 0.3, tip[1]]]))
    return segs


def generate_leaves(
    out_dir: str | Path, *, n_species: int = 10, n_train: int = 960, n_test: int = 240, size: int = 96,
    seed: int = 0,
) -> Path:
    """Write a synthetic leaf set in the Kaggle layout to ``out_dir`` and return it.

    Classes are balanced (round-robin) and images are shuffled; the same arguments give the same files.
    """
    if not 2 <= n_species <= len(SPECIES):
        raise ValueError(f"n_species must be in 2..{len(SPECIES)}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    labels = np.arange(total) % n_species
    rng.shuffle(labels)
    names = []
    for i, k in enumerate(labels):
        name = f"images/{i}.jpg"
        render_leaf(SPECIES[k], size, rng).save(out / name, quality=92)
        names.append(name)
    species = np.array([f"synthetica_{SPECIES[k].name}" for k in labels])
    pd.DataFrame({"image": names[:n_train], "label": species[:n_train]}).to_csv(out / "train.csv", index=False)
    pd.DataFrame({"image": names[n_train:]}).to_csv(out / "test.csv", index=False)
    pd.DataFrame({"image": names[n_train:], "label": species[n_train:]}).to_csv(out / "test_labels.csv", index=False)
    return out
