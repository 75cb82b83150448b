"""Training augmentation and test-time views on whole uint8 batches, on the device.

One ``grid_sample`` per batch draws, for every image independently, a random resized crop, the flips and
quarter turns the data keeps (``features.symmetry``) and an optional small rotation; colour jitter and the
auto-augment policies (off by default) run per image through torchvision v2 on the same device. The random
draws come from torch's global CPU generator, which the trainer's checkpoints carry, so a seeded run is
reproducible and a resumed one continues on the same draws. A GPU is never starved by a CPU worker pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from features.images import normalise
from features.symmetry import ELEMENTS, Symmetry
from pipelines.core.errors import PipelineError

AUTO_AUGMENT = ("trivial", "rand", "imagenet", "none")


def crop_params(n: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per image (width, height, centre x, centre y) of a random resized crop in ``[-1, 1]`` coordinates:
    area uniform in ``scale``, log aspect uniform in ``ratio`` (torchvision's RandomResizedCrop)."""
    area = torch.empty(n).uniform_(*scale)
    aspect = torch.exp(torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    cx, cy = (torch.rand(n) * 2 - 1) * (1 - w), (torch.rand(n) * 2 - 1) * (1 - h)
    return torch.stack([w, h, cx, cy], 1)


class BatchAugment:
    """The trainer's ``batch_hook`` for images: uint8 batch on the device -> augmented, normalised float batch.

    ``symmetry`` says which flips and quarter turns training may use (never assumed: ``features.symmetry``);
    ``crop_scale`` the smallest area share a random crop keeps; ``rotation`` a uniform tilt in +-degrees;
    ``jitter`` and ``auto_augment`` per-image colour policies. ``then`` (mixup/cutmix) runs last.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, symmetry: Symmetry,
                 crop_scale: float = 0.7, rotation: float = 0.0, jitter: float = 0.0, auto_augment: str = "none",
                 then=None):
        if auto_augment not in AUTO_AUGMENT:
            raise PipelineError(f"unknown --auto-augment {auto_augment!r}; choose one of {', '.join(AUTO_AUGMENT)}")
        self.mean, self.std, self.symmetry = tuple(mean), tuple(std), symmetry
        self.crop_scale, self.rotation, self.then = crop_scale, rotation, then
        policy = {"trivial": [v2.TrivialAugmentWide()], "rand": [v2.RandAugment(num_ops=2, magnitude=9)],
                  "imagenet": [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)], "none": []}[auto_augment]
        colour = [v2.ColorJitter(jitter, jitter, jitter, 0.02)] if jitter else []
        self.policy = v2.Compose(colour + policy) if colour or policy else None

    def affine(self, n: int) -> torch.Tensor:
        """(n, 2, 3) sampling matrices: output pixel -> input position (crop, flips, quarter turns, tilt)."""
        w, h, cx, cy = crop_params(n, (self.crop_scale, 1.0)).unbind(1)
        sym = self.symmetry
        fx = torch.where(torch.rand(n) < sym.hflip, -1.0, 1.0)
        fy = torch.where(torch.rand(n) < sym.vflip, -1.0, 1.0)
        angle = torch.randint(0, 4, (n,)).float() * (math.pi / 2) if sym.rot90 else torch.zeros(n)
        if self.rotation:
            angle = angle + torch.empty(n).uniform_(-1, 1) * math.radians(self.rotation)
        cos, sin = angle.cos(), angle.sin()
        # input = diag(w, h) @ R(angle) @ diag(fx, fy) @ output + centre
        rows = [torch.stack([w * cos * fx, -w * sin * fy], 1), torch.stack([h * sin * fx, h * cos * fy], 1)]
        a = torch.stack(rows, 1)
        return torch.cat([a, torch.stack([cx, cy], 1)[:, :, None]], 2)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.policy is not None:  # per-image colour policies, uint8 in and out
            x = torch.stack([self.policy(img) for img in x])
        theta = self.affine(len(x)).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = normalise(out, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        return self.then(out, y) if self.then is not None else (out, y)


class View:
    """One test-time view: a symmetry element applied to a uint8 batch, then the model's normalisation."""

    def __init__(self, element: str, mean: Sequence[float], std: Sequence[float]):
        self.element, self.op, self.mean, self.std = element, ELEMENTS[element], tuple(mean), tuple(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(self.op(x), self.mean, self.std).contiguous(memory_format=torch.channels_last)
