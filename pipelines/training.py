"""The shared training loop: one readable block (forward, loss, backward, clip, step) for every model.

Runs on CPU or one CUDA GPU (autocast + channels_last); extension points are plain callables on a
few named events (minGPT's ``add_callback``), not a framework. Used by the d2l house-prices preset,
the leaves pipeline, the ``models/`` baselines and tuning.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import nn

EVENTS = ("on_batch_end", "on_epoch_end")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Owns model, optimizer and loss; ``fit`` trains, ``predict`` infers.

    ``autocast`` is used on CUDA only (bf16 where supported, else fp16 with a gradient scaler);
    on CPU the loop is plain fp32 so results are bit-reproducible under a seed.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        scheduler=None,
        device: torch.device | str | None = None,
        grad_clip: float | None = None,
        channels_last: bool = False,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.channels_last = channels_last and self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.loss_fn, self.scheduler, self.grad_clip = optimizer, loss_fn, scheduler, grad_clip
        cuda = self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self.epoch = 0

    def add_callback(self, event: str, fn: Callable[..., None]) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events: {EVENTS}")
        self.callbacks[event].append(fn)

    def _trigger(self, event: str, **info) -> None:
        for fn in self.callbacks[event]:
            fn(self, **info)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def train_epoch(self, loader: Iterable) -> dict:
        """One pass over ``loader``; returns mean loss, sample count and throughput."""
        self.model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        for x, y in loader:
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.item() * len(x)
            count += len(x)
            self._trigger("on_batch_end", loss=loss.item())
        seconds = time.perf_counter() - start
        return {"loss": total / max(count, 1), "samples": count, "seconds": seconds,
                "samples_per_s": count / max(seconds, 1e-9)}

    def fit(self, loader: Iterable, epochs: int) -> list[dict]:
        """Train for ``epochs``; ``on_epoch_end`` callbacks get the epoch's stats (and may validate)."""
        history = []
        for _ in range(epochs):
            stats = self.train_epoch(loader)
            self.epoch += 1
            stats["epoch"] = self.epoch
            self._trigger("on_epoch_end", stats=stats)
            history.append(stats)
        return history

    @torch.no_grad()
    def predict(self, loader: Iterable) -> torch.Tensor:
        """Model outputs for every batch of ``loader`` (inputs, or ``(inputs, _)`` pairs), on CPU, fp32."""
        self.model.eval()
        outs = []
        for batch in loader:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            with self._autocast():
                outs.append(self.model(self._to_device(x)).float().cpu())
        return torch.cat(outs)
