"""Checkpoints: the state a killed training run needs to continue exactly.

A checkpoint is written atomically (``pipelines.core.io.atomic_write``) so a run killed mid-write
keeps its previous checkpoint. It holds the trainer's state (model, optimizer, scheduler, scaler, EMA,
epoch), the early-stopping state (``callbacks.EarlyStopping.state_dict``) and every RNG state, so on CPU
a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pipelines.core.errors import PipelineError
from pipelines.core.io import atomic_write


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
