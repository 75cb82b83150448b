"""Every registered model: output shapes for 1 and 3 channels at 32, 64 and 224 px where the
architecture allows, its declared smallest input is exact, and a few steps on a fixed batch learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models

SIZES = (32, 64, 224)
IMAGE_MODELS = models.list_models(module=("cnn", "rnn"))
TABULAR_MODELS = models.list_models(module="tabular")
BIG = {"alexnet", "vgg11"}  # 47M and 129M parameters: built at 224 px or stepped, seconds each on CPU


def _marked(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


def min_side(name: str) -> int:
    """Smallest square image side ``name`` accepts, from its registered config."""
    return models.get_model_cfg(name)["min_input_size"][-1]


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", _marked(IMAGE_MODELS))
def test_forward_shapes(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=7, in_chans=in_chans).eval()
    sizes = [s for s in SIZES if s >= min_side(name)]
    assert 224 in sizes  # every classic net must at least run at ImageNet size
    with torch.no_grad():
        for size in sizes:
            batch = 1 if size == 224 else 2  # 224 px only where it is cheap
            out = model(torch.randn(batch, in_chans, size, size))
            assert out.shape == (batch, 7), (size, out.shape)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if min_side(n) > 1])
def test_min_input_size_is_exact(name: str) -> None:
    model = models.create_model(name, num_classes=3, in_chans=1).eval()
    side = min_side(name)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, side, side)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 1, side - 1, side - 1))


def _loss_falls(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int, lr: float) -> None:
    """Every parameter gets a finite, non-zero gradient, and a few Adam steps on one fixed batch lower
    its loss. Dropout is switched off (BatchNorm stays in training mode) so the before/after losses
    measure learning, not dropout noise. The margin is small on purpose: the book's NiN starts with
    nearly input-independent outputs (12 ReLU layers under Xavier init) and moves slowly at first."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def measure() -> float:
        with torch.no_grad():
            return loss_fn(model(x), y).item()

    before = measure()
    for step in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for pname, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), pname
                assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
        opt.step()
    after = measure()
    assert after < before - 1e-3, (before, after)


@pytest.mark.parametrize("name", _marked(IMAGE_MODELS))
def test_a_few_steps_reduce_the_loss(name: str) -> None:
    torch.manual_seed(0)
    side = max(32, min_side(name))
    model = models.create_model(name, num_classes=4, in_chans=3)
    y = torch.arange(8) % 4
    x = torch.randn(4, 3, side, side)[y] + 0.5 * torch.randn(8, 3, side, side)  # a noisy template per class
    _loss_falls(model, x, y, nn.functional.cross_entropy, steps=2 if name in BIG else 5, lr=1e-4)


@pytest.mark.parametrize("name", TABULAR_MODELS)
def test_tabular_forward_and_steps(name: str) -> None:
    torch.manual_seed(0)
    model = models.create_model(name, in_features=12)
    x = torch.randn(16, 12)
    y = x[:, :1] * 2.0 - x[:, 1:2] + 3.0
    assert model.eval()(x).shape == (16, 1)
    assert models.create_model(name, in_features=12, num_classes=5)(x).shape == (16, 5)
    _loss_falls(model, x, y, nn.functional.mse_loss, steps=20, lr=1e-3)
