"""One ``set_seed`` per entry point, as in timm: library code takes ``seed`` arguments instead."""

import os
import random

import numpy as np

SEED_SPACE = 2**32  # numpy's and scikit-learn's seeds are below it; ``--seed`` is checked against it


def seed32(value: int) -> int:
    """A seed derived from ``--seed`` (``seed * 1000 + fold``, ``seed + repeat``) folded into numpy's range:
    the same value whenever it already fits, so runs with ordinary seeds are unchanged."""
    return int(value) % SEED_SPACE


def set_seed(seed: int, deterministic: bool = True, torch_rng: bool = True) -> None:
    """Seed Python, NumPy and (unless ``torch_rng`` is False) torch; with ``deterministic`` also ask torch for
    deterministic kernels. ``torch_rng=False`` is for an entry point whose models draw nothing from torch's global
    generator (house prices' scikit-learn models; its MLP seeds its own): it then never imports torch (about 1 s).

    Where bit-identity holds: on CPU a seed fixes every result (the tests check a killed and resumed run
    against an uninterrupted one, byte for byte). On CUDA the deterministic kernels are used where torch has
    them (cuDNN autotuning off, cuBLAS given the fixed workspace ``CUBLAS_WORKSPACE_CONFIG`` it needs before
    its first call); the few ops torch has no deterministic CUDA kernel for warn instead of failing the run,
    so a GPU run is reproducible up to those ops. ``PYTHONHASHSEED`` cannot change this interpreter's string
    hashing; it is set for the processes this one starts (tune workers), whose set orders then repeat.
    """
    seed = seed32(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if not torch_rng:
        return
    import torch

    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
