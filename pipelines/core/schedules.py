"""The per-step LR schedule of the shared loop: timm's warmup + cosine, whose end a fold may bring forward.

Kept apart from ``training.py`` because it imports timm, which the tabular pipeline never needs.
"""

from __future__ import annotations

import math

from timm.scheduler import CosineLRScheduler


class WarmupCosine(CosineLRScheduler):
    """timm's ``CosineLRScheduler`` stepped per optimizer step, with :meth:`end_early`: from step ``start`` the
    LR leaves the planned cosine and goes from its value there down to ``lr_min`` along a half cosine by step
    ``stop``, held after (a warmup-stable-decay ending, brought forward when a fold has fit its rows). timm's
    ``state_dict`` saves every attribute, so the brought-forward end is in a checkpoint and a resume keeps it."""

    def end_early(self, start: int, stop: int) -> None:
        self.end = (int(start), max(int(stop), int(start) + 1))

    def _get_lr(self, t: int) -> list[float]:
        end = getattr(self, "end", None)
        if end is None or t <= end[0]:
            return super()._get_lr(t)
        start, stop = end
        frac = min(1.0, (t - start) / (stop - start))
        decay = 0.5 * (1 + math.cos(math.pi * frac))
        return [self.lr_min + (lr - self.lr_min) * decay for lr in super()._get_lr(start)]
