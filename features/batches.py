"""Batches of the uint8 image cache (``features.images.decode_cache``) for training and prediction.

The cache is gathered batch by batch with one index operation, on the GPU when it fits there (no
host-to-device copy per batch at all), else pinned and copied asynchronously: no worker pool decodes or
collates anything. Training batches are shuffled per ``(seed, epoch)`` and sharded over DDP ranks like
``DistributedSampler``, so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def on_device(images: torch.Tensor, device: torch.device, share: float = 0.25) -> torch.Tensor:
    """The cache where batches are cheapest to gather: on a CUDA device when it takes at most ``share`` of the
    free GPU memory (no host-to-device copy per batch at all), else where it is (the CPU; batches are then
    pinned and copied asynchronously)."""
    if device.type != "cuda":
        return images
    import torch.cuda

    free, _ = torch.cuda.mem_get_info(device)
    return images.to(device) if images.numel() <= share * free else images


class TensorBatches:
    """Batches ``(images[idx], labels[idx])`` of a uint8 image cache: shuffled per ``(seed, epoch)`` and full
    (training), or in order (prediction); sharded over DDP ranks like ``DistributedSampler``.

    It is its own ``sampler`` so the trainer calls :meth:`set_epoch` before each epoch; the order is a
    function of ``(seed, epoch)`` only, which keeps a resumed run on the same batches.
    """

    def __init__(self, images: torch.Tensor, labels: Sequence[int] | None, batch_size: int, *, shuffle: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, pin: bool = False):
        self.images, self.batch_size, self.shuffle, self.seed = images, batch_size, shuffle, seed
        n = len(images)
        self.labels = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.as_tensor(
            np.asarray(labels), dtype=torch.long)
        self.rank, self.world_size, self.pin, self.epoch = rank, world_size, pin, 0
        self.sampler = self
        if shuffle:  # full batches only (a batch of one breaks batch norm); fewer rows than a batch: one batch
            self.batch_size = min(batch_size, max(1, n // world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.images)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g)
        per_rank = n // self.world_size
        order = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return order[: len(order) // self.batch_size * self.batch_size]

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        for i in range(0, len(idx), self.batch_size):
            part = idx[i:i + self.batch_size]
            x = self.images[part.to(self.images.device)]
            yield (x.pin_memory() if self.pin and not x.is_cuda else x), self.labels[part]
