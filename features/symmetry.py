"""Which flips and turns keep an image's label: decided from the training rows, never assumed.

The square's symmetry group (D4) has eight elements: the identity, the horizontal and vertical flips, the
half turn, the two quarter turns and the two transposes. Many real sets keep their labels under all of
them (leaves on a scanner, solar cells, cells under a microscope); many do not (digits, text, arrows,
signs, anything with a gravity axis or a handedness). Training with a flip that turns one class into
another costs those classes half their accuracy, and no later check sees it: a model trained on flipped
images is flip-invariant by construction.

The test (:func:`decide`): frozen pretrained features of every sampled training image in each of the eight
views; for each element T, a ridge classifier fitted on an inner half of the rows with T as augmentation
(the features of the image and of its T-view, both with the image's label) against one fitted on the
same rows without it, both scored on the other half's untransformed images (cross-fitted over two
halves, so every row is scored once). If T maps some class onto another, the augmented probe learns
the two as one and loses their rows; if T keeps labels, it loses nothing. The burden of proof is on the
flip: T is kept only when the data shows it costs at most ``tol`` accuracy, i.e. when the loss's upper
confidence bound (the measured loss plus twice its paired standard error) stays within ``tol``; too few
rows to show it, and T is left out.

Keeping labels is not enough: T must also make images the set has. A second ridge probe, fitted on the same
halves, tells T's views from the untransformed images; where it does so on at least ``DETECT_MAX`` of the other
half's images, T makes images no test row will look like (ELPV's solar cells all have horizontal busbars: a
quarter turn keeps a cell's defect level, and the probe tells turned cells from upright ones 0.999 of the time)
and training on them spends the network on a distribution it is never asked about, so T is left out too
(docs/leaves.md, "Flips and turns that make images the rows do not have"). The augmentation then uses the
largest group the timm-style flags can express (h and v flips, quarter turns) whose elements all passed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.core.fold_batchnorm import fold_batchnorm

# each element as an operation on (..., H, W) tensors of square images
ELEMENTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-1).flip(-2),
    "rot90": lambda x: torch.rot90(x, 1, (-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, (-2, -1)),
    "transpose": lambda x: x.transpose(-1, -2),
    "antitranspose": lambda x: x.flip(-1).flip(-2).transpose(-1, -2),
}
# a flip or turn whose views a ridge probe tells from the untransformed images (held out, both kinds counted) at
# least this often makes images the set does not have, and is not trained on. Measured per fold of the development
# sets: ELPV's quarter turns and transposes 0.999-1.000 (its flips 0.66-0.76, seeds 0-2), the synthetic leaves
# (drawn at any angle) 0.53-0.74 for every element; on 512 rows of the 8 px glyphs 0.58-0.81
DETECT_MAX = 0.9
# the subgroups the flags --hflip, --vflip and --rot90 can express (independent flips, random quarter turns),
# largest first; the other four subgroups of D4 ({e, r180}, the transposes) need a diagonal flip no flag names
GROUPS: list[tuple[str, ...]] = [
    tuple(ELEMENTS),  # hflip + rot90 (or all three flags)
    ("identity", "hflip", "vflip", "rot180"),  # hflip + vflip
    ("identity", "rot180", "rot90", "rot270"),  # rot90
    ("identity", "hflip"),
    ("identity", "vflip"),
    ("identity",),
]


@dataclass(frozen=True)
class Symmetry:
    """What the training augmentation and the test-time views use: flip probabilities and quarter turns."""

    hflip: float = 0.0
    vflip: float = 0.0
    rot90: bool = False

    @property
    def group(self) -> tuple[str, ...]:
        """The group these flips and turns generate (its elements, in :data:`ELEMENTS` order)."""
        h, v, r = self.hflip > 0, self.vflip > 0, self.rot90
        if r and (h or v):
            return GROUPS[0]
        if r:
            return GROUPS[2]
        return tuple(e for e in ELEMENTS if e == "identity" or (e == "hflip" and h) or (e == "vflip" and v)
                     or (e == "rot180" and h and v))

    @classmethod
    def from_group(cls, group: tuple[str, ...]) -> Symmetry:
        return cls(0.5 if "hflip" in group else 0.0, 0.5 if "vflip" in group and "rot90" not in group else 0.0,
                   "rot90" in group)

    def describe(self) -> str:
        parts = [f"hflip {self.hflip:g}" if self.hflip else "", f"vflip {self.vflip:g}" if self.vflip else "",
                 "rot90" if self.rot90 else ""]
        return ", ".join(p for p in parts if p) or "none"


def tta_elements(symmetry: Symmetry, n: int) -> list[str]:
    """The first ``n`` test-time views: the identity, then the kept group's other elements (flips first)."""
    return list(symmetry.group)[: max(1, n)]


def probe_scores(features: dict[str, np.ndarray], y: np.ndarray, seed: int, alpha: float = 300.0
                 ) -> tuple[dict, dict]:
    """Cross-fitted hits of the plain and of each T-augmented ridge probe on the rows' untransformed features,
    and of a ridge probe telling each T's views from the untransformed images.

    ``features[name]`` holds (rows, dims) features of the rows in view ``name``. Two stratified halves; each is
    scored by probes fitted on the other. Returns ``({"plain": hits, T: hits}, {T: detected})``: booleans per
    row, and per (untransformed, T-view) image of every row.
    """
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    def fit(x, labels):
        with warnings.catch_warnings():  # constant features (blank borders) make the system ill-conditioned
            warnings.simplefilter("ignore")
            return RidgeClassifier(alpha=alpha).fit(x, labels)

    views = [e for e in features if e != "identity"]
    hits = {name: np.zeros(len(y), bool) for name in ["plain", *views]}
    detected = {name: np.zeros((2, len(y)), bool) for name in views}
    base = features["identity"]
    for rows, held in StratifiedKFold(2, shuffle=True, random_state=seed).split(base, y):
        scaler = StandardScaler().fit(base[rows])
        held_x = scaler.transform(base[held])
        for name in hits:
            other = base[rows] if name == "plain" else features[name][rows]  # plain: the same rows twice
            pair = scaler.transform(np.vstack([base[rows], other]))
            hits[name][held] = fit(pair, np.concatenate([y[rows], y[rows]])).predict(held_x) == y[held]
            if name != "plain":  # 0: untransformed, 1: T's view
                which = fit(pair, np.repeat([0, 1], len(rows)))
                detected[name][0, held] = which.predict(held_x) == 0
                detected[name][1, held] = which.predict(scaler.transform(features[name][held])) == 1
    return hits, {name: d.ravel() for name, d in detected.items()}


def decide(features: dict[str, np.ndarray], y: np.ndarray, seed: int = 0, tol: float = 0.04,
           detect_max: float = DETECT_MAX) -> dict:
    """Which elements keep labels on these rows and make images like them, and the largest flag-expressible
    group of kept elements.

    Returns ``{"tests": {T: {"plain", "augmented", "delta", "se", "keeps_labels", "detected", "kept"}}, "group":
    (...), "symmetry": Symmetry}``; ``features`` as in :func:`probe_scores`.
    """
    y = np.asarray(y)
    inverse = np.unique(y, return_inverse=True)[1]
    enough = np.bincount(inverse)[inverse] >= 2
    _, y = np.unique(y[enough], return_inverse=True)  # a class needs a row in each half
    if y.max(initial=0) < 1:  # fewer than two such classes: the data shows nothing, nothing is kept
        return {"tests": {}, "group": ("identity",), "symmetry": Symmetry(), "rows": int(enough.sum())}
    hits, detected = probe_scores({name: f[enough] for name, f in features.items()}, y, seed)
    plain, tests = hits.pop("plain"), {}
    for name, aug in hits.items():
        diff = aug.astype(float) - plain
        se = float(np.sqrt(np.abs(diff).sum()) / len(diff))  # paired (McNemar) standard error of the mean difference
        delta, seen = float(diff.mean()), float(detected[name].mean())
        labels = bool(delta - 2 * se >= -tol)
        tests[name] = {"plain": float(plain.mean()), "augmented": float(aug.mean()), "delta": delta, "se": se,
                       "keeps_labels": labels, "detected": seen, "kept": labels and seen < detect_max}
    kept = {"identity"} | {name for name, t in tests.items() if t["kept"]}
    group = next(g for g in GROUPS if set(g) <= kept)
    return {"tests": tests, "group": group, "symmetry": Symmetry.from_group(group), "rows": len(y)}


def summary(decisions: dict[int, tuple[Symmetry, dict]]) -> str:
    """One line: what each fold kept and why (flags, or the probe's figures for the element it lost most on)."""
    kept = {k: sym.describe() for k, (sym, _) in decisions.items()}
    text = next(iter(kept.values())) if len(set(kept.values())) == 1 else "; ".join(
        f"fold {k}: {v}" for k, v in kept.items())
    record = next(iter(decisions.values()))[1]
    if record["source"] == "flags":
        return f"flips and turns from the flags: {text}"
    tests = record["tests"]
    if not tests:
        return f"flips and turns: {text} (too few rows per class to test any)"
    worst = min(tests, key=lambda n: tests[n]["delta"])
    lost = [n for n, t in tests.items() if not t["keeps_labels"]]
    unlike = [n for n, t in tests.items() if t["keeps_labels"] and not t["kept"]]
    told = ""
    if unlike:
        told = (f"; makes images the rows do not have (told apart {min(tests[n]['detected'] for n in unlike):.3f} "
                f"of the time or more): {', '.join(unlike)}")
    return (f"flips and turns kept by the training rows: {text} (linear probe on {record['rows']} rows of the first "
            f"fold: accuracy {tests[worst]['plain']:.3f}, trained with {worst} {tests[worst]['augmented']:.3f}; "
            f"labels change under: {', '.join(lost) or 'none'}{told})")


@torch.no_grad()
def view_features(model: torch.nn.Module, images: torch.Tensor, mean, std, *, side: int | None = None,
                  batch_size: int = 32, device: torch.device | str = "cpu", level: int | None = 3
                  ) -> dict[str, np.ndarray]:
    """Features (a feature map average-pooled over a 2 x 2 grid) of uint8 square ``images`` in each of the
    eight views, resized to ``side`` px first when given (the test needs shapes, not fine detail; tiny images
    are enlarged so the ImageNet features see them at a scale they know).

    The map is timm's intermediate ``level`` (``feature_info`` index; 3: stride 16, efficientnet-lite0's
    112 channels), the forward stopped there; ``None``: the last map. Flips and turns are geometry, which the
    middle of a network still holds and its last stage pools into what an object is: on the 8 px glyphs the
    probe read 0.97-0.98 of a fold's rows right on the stride-16 map against 0.55 on the last, and their mirror
    cost it 0.30-0.31 instead of 0.04-0.08, while ELPV and the synthetic leaves kept their labels under every
    flip and turn (docs/leaves.md, "The stride-16 map, not the last").

    Batches of 32 in ``channels_last`` (oneDNN's fast layout), batch norm folded into the convolutions (the
    same features, 1.5x faster); the model is a frozen copy nothing else uses:
    960 images at 96 px took 14 s against 40 s in batches of 128 in the default layout on a 2-core CPU."""
    from features.images import normalise

    model = model.to(device, memory_format=torch.channels_last).eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in ELEMENTS}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float()
        if side and side != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=side < x.shape[-1])
        for name, op in ELEMENTS.items():
            view = normalise(op(x), mean, std).contiguous(memory_format=torch.channels_last)
            if not i and name == "identity":  # the same function with batch norm folded in: 1.5x faster
                model = fold_batchnorm(model, view[:2])[0]
            fmap = model.forward_features(view) if level is None else model.forward_intermediates(
                view, indices=[level], intermediates_only=True, stop_early=True)[0]
            # a 2 x 2 grid of average-pooled features: global pooling alone cannot tell a left arrow from a right one
            grid = torch.nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(1)
            out[name].append(grid.float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}
