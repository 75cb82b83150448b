"""Checkpoints: the state a killed training run needs to continue exactly.

A checkpoint is written atomically (``pipelines.core.files.atomic_write``, fsynced) so a run killed mid-write
keeps its previous checkpoint. It holds the trainer's state (model, optimizer, scheduler, scaler, EMA,
epoch), the early-stopping state (``callbacks.EarlyStopping.state_dict``) and every RNG state, so on CPU
a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from pipelines.core.errors import PipelineError, disk_error
from pipelines.core.files import atomic_write


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


# torch's own words for a failed write: its zip writer reports the OSError behind it only as this text
_TORCH_WRITE_FAILED = ("file write failed", "enforce fail at inline_container", "No space left on device")
LOW_SPACE = 64 * 2**20  # bytes free below which a failed write is put down to a full disk


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically (``atomic_write``: a temporary file beside it, fsynced,
    then ``os.replace``): a run killed or failing mid-write keeps its previous, whole checkpoint.

    A full disk is one line, ``no space left on device writing <path>``: torch reports it as
    ``RuntimeError: [enforce fail at inline_container.cc:...] ... file write failed``, with the cause only in
    the log, so the free space on the folder's device is checked (while the failed file still takes it up)."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        try:
            torch.save(state, fh)
        except RuntimeError as err:
            if not any(text in str(err) for text in _TORCH_WRITE_FAILED):
                raise
            known, free = disk_error(err, path), shutil.disk_usage(path.parent).free
            if known is None and ("No space left" in str(err) or free < LOW_SPACE):
                known = PipelineError(f"no space left on device writing {path}")
            raise known or PipelineError(f"cannot write {path}: torch's write failed "
                                         f"({free / 2**20:.0f} MiB free on its device)") from err
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as err:
        raise PipelineError(f"checkpoint not found: {path}") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise PipelineError(f"cannot read checkpoint {path}: {type(err).__name__}: "
                            f"{(str(err).strip().splitlines() or [''])[0][:200]}") from err
