"""Early stopping and checkpoints: the state a killed training run needs to continue exactly.

A checkpoint is written atomically (``pipelines.io.atomic_write``) so a run killed mid-write
keeps its previous checkpoint. It holds the trainer's state (model, optimizer, scheduler, scaler, EMA,
epoch), the early-stopping state and every RNG state, so on CPU a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from pipelines.core.errors import PipelineError
from pipelines.core.io import atomic_write


class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement of more than ``min_delta``.

    ``mode`` is ``"max"`` (accuracy) or ``"min"`` (loss). ``step(value)`` returns whether the value is a
    new best; ``should_stop`` says when to stop. The state round-trips through ``state_dict``.
    """

    def __init__(self, patience: int = 3, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch, self.bad_epochs, self.epochs_seen = -1, 0, 0

    def is_better(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def step(self, value: float) -> bool:
        improved = self.is_better(value)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, self.epochs_seen, 0
        else:
            self.bad_epochs += 1
        self.epochs_seen += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("patience", "mode", "min_delta", "best", "best_epoch",
                                               "bad_epochs", "epochs_seen")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically; returns the path."""
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as err:
        raise PipelineError(f"checkpoint not found: {path}") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise PipelineError(f"cannot read checkpoint {path}: {type(err).__name__}") from err
