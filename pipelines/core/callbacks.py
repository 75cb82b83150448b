"""Callbacks a training loop calls at its ``on_epoch_end`` event (``Trainer.add_callback``).

Kept apart from checkpoints because they decide, while checkpoints only save: early stopping says which
epoch to keep and when to stop; its state goes into the checkpoint so a resumed run decides the same.
"""

from __future__ import annotations

import math


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
