"""Flips and turns for Classify Leaves: the symmetry each fold trains with, and the test-time views it keeps.

A fold's symmetry comes from the user's flags (``--hflip P``, ``--vflip P``, ``--rot90 on|off``) where given,
and from the linear-probe test of ``features.symmetry`` on that fold's training rows for the rest: the rows
it scores never choose it. Its test-time views are the kept group's elements (identity first), at most
``--tta``; how many to average is chosen on the other folds' out-of-fold rows (:func:`choose_tta`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.symmetry import GROUPS, Symmetry, decide, tta_elements  # noqa: F401  (tta_elements: re-exported)
from pipelines.core.errors import PipelineError

PROBE_MODEL = "tf_efficientnet_lite0"  # frozen ImageNet features from its PyPI package: offline, on every machine
PROBE_SIDE = 96  # the test asks which classes a flip confuses: shapes (a 6 x 6 map at stride 16), cheaper than 112 px
PROBE_BATCH = 32


def parse_flip(value: str | float) -> float | None:
    """``auto`` -> None; else a probability in [0, 1] (the flag's argparse type)."""
    if str(value).lower() == "auto":
        return None
    try:
        p = float(value)
    except ValueError:
        raise PipelineError(f"a flip probability is 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0 <= p <= 1:
        raise PipelineError(f"a flip probability is 'auto' or a number in [0, 1], got {value!r}")
    return p


def parse_rot90(value: str | bool) -> bool | None:
    value = str(value).lower()
    if value not in ("auto", "on", "off", "true", "false"):
        raise PipelineError(f"--rot90 is auto, on or off, got {value!r}")
    return None if value == "auto" else value in ("on", "true")


@dataclass
class ProbeFeatures:
    """Frozen features of a stratified sample of the training rows, in each of the eight views."""

    rows: np.ndarray  # indices into the training table
    features: dict[str, np.ndarray]
    seconds: float


def probe_rows(y: np.ndarray, seed: int, cap: int = 1024) -> np.ndarray:
    """A stratified sample of at most ``max(cap, 4 per class)`` training rows (all of them when fewer)."""
    from sklearn.model_selection import train_test_split

    n = max(cap, 4 * len(np.unique(y)))
    if n >= len(y):
        return np.arange(len(y))
    rows, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
    return np.sort(rows)


def probe_features(images, y: np.ndarray, seed: int, device, compute=None) -> ProbeFeatures:
    """Features of the sampled rows in every view, with the packaged probe backbone: ``rows_features`` here,
    or ``compute(rows)`` (``fold_jobs`` shares the rows among its processes)."""
    import time

    start = time.perf_counter()
    rows = probe_rows(y, seed)
    feats = compute(rows) if compute is not None else rows_features(images, rows, device)
    return ProbeFeatures(rows, feats, time.perf_counter() - start)


def rows_features(images, rows: np.ndarray, device) -> dict[str, np.ndarray]:
    """The probe backbone's features of ``images[rows]`` in each of the eight views, in batches of
    ``PROBE_BATCH`` (``fold_jobs`` splits the rows between processes at those batches' bounds)."""
    import torch

    from features.symmetry import view_features
    from models import create_model, input_stats

    with torch.random.fork_rng(devices=[]):  # building a model draws from torch's RNG: leave the run's stream alone
        model = create_model(PROBE_MODEL, 2, pretrained=True)
    mean, std = input_stats(model)
    return view_features(model, images[torch.as_tensor(rows)], mean, std, side=PROBE_SIDE, device=device,
                         batch_size=PROBE_BATCH)


def flag_overrides(cfg) -> tuple[float | None, float | None, bool | None]:
    return parse_flip(cfg.hflip), parse_flip(cfg.vflip), parse_rot90(cfg.rot90)


def fold_symmetry(cfg, probe: ProbeFeatures | None, y: np.ndarray, train_idx: np.ndarray, seed: int
                  ) -> tuple[Symmetry, dict]:
    """The symmetry a fold trains with and the record of how it was chosen (flags win, the probe decides
    the rest on the fold's training rows only)."""
    h, v, r = flag_overrides(cfg)
    if None not in (h, v, r):
        return Symmetry(h, v, r), {"source": "flags"}
    rows = np.isin(probe.rows, train_idx)
    feats = {name: f[rows] for name, f in probe.features.items()}
    decision = decide(feats, y[probe.rows[rows]], seed=seed)
    kept = {"identity"} | {name for name, t in decision["tests"].items() if t["kept"]}
    if h is not None:
        kept = kept | {"hflip"} if h > 0 else kept - {"hflip"}
    if v is not None:
        kept = kept | {"vflip"} if v > 0 else kept - {"vflip"}
    if r is not None:
        kept = kept | {"rot90", "rot180", "rot270"} if r else kept - {"rot90", "rot270"}
    group = next(g for g in GROUPS if set(g) <= kept)
    auto = Symmetry.from_group(group)
    sym = Symmetry(auto.hflip if h is None else h, auto.vflip if v is None else v, auto.rot90 if r is None else r)
    return sym, {"source": "probe" if (h, v, r) == (None, None, None) else "probe and flags",
                 "rows": decision["rows"], "tests": decision["tests"], "group": list(sym.group)}


def predict_views(trainer, loader, elements: list[str], mean, std) -> np.ndarray:
    """Softmax probabilities of ``loader``'s rows in each view: (views, rows, classes)."""
    import torch

    from features.augment import View

    return torch.stack([trainer.predict(loader, transform=View(e, mean, std)).softmax(1) for e in elements]).numpy()


def choose_tta(views: dict[int, np.ndarray], y: np.ndarray, folds: np.ndarray) -> dict:
    """How many test-time views to average, chosen on out-of-fold accuracy, cross-fitted.

    ``views[k]`` holds fold k's rows' probabilities per view (views, rows, classes); folds may have kept
    different groups, so a count above a fold's views means all of them. Each fold's rows get the count that
    scores best on the *other* folds' rows (ties: fewer views), so the reported CV stays honest; the test set
    gets the count best on all rows.
    """
    n_views = max(len(v) for v in views.values())
    means = np.zeros((n_views, len(folds), next(iter(views.values())).shape[2]))
    for k, v in views.items():
        cum = np.cumsum(v, axis=0) / np.arange(1, len(v) + 1)[:, None, None]
        means[:, folds == k] = cum[np.minimum(np.arange(n_views), len(v) - 1)]
    hits = means.argmax(2) == np.asarray(y)[None, :]

    def best(rows: np.ndarray) -> int:
        acc = hits[:, rows].mean(1)
        return int(np.flatnonzero(acc >= acc.max() - 1e-12)[0]) + 1

    oof, per_fold = np.empty_like(means[0]), {}
    for k in np.unique(folds):
        rows, others = folds == k, folds != k
        per_fold[int(k)] = best(others) if others.any() else 1  # a single trained fold has nothing to choose on
        oof[rows] = means[per_fold[int(k)] - 1, rows]
    return {"oof": oof, "per_fold": per_fold, "test": best(np.ones(len(folds), bool)),
            "oof_accuracy": {k + 1: float(hits[k].mean()) for k in range(n_views)}}

