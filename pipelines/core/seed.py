"""One ``set_seed`` per entry point, as in timm: library code takes ``seed`` arguments instead."""

import os
import random

import numpy as np

SEED_SPACE = 2**32  # numpy's and scikit-learn's seeds are below it; ``--seed`` is checked against it


def seed32(value: int) -> int:
    """A seed derived from ``--seed`` (``seed * 1000 + fold``, ``seed + repeat``) folded into numpy's range:
    the same value whenever it already fits, so runs with ordinary seeds are unchanged."""
    return int(value) % SEED_SPACE


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` also ask torch for deterministic kernels."""
    seed = seed32(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
