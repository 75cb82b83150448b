"""Tabular networks of the d2l house-prices chapter: linear regression and an MLP with dropout.

Both take ``in_features`` (the width of the feature matrix) and flatten their input first, so the MLP
also reads small images the way d2l's Fashion-MNIST MLP does. Init: Gaussian N(0, 0.01^2) weights and
zero biases, as the book initialises its linear regression and MLPs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from models._registry import register_model


def _init_normal(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.01)
        nn.init.zeros_(module.bias)


@register_model
def linear(in_features: int, num_classes: int = 1) -> nn.Module:
    """Linear regression (d2l 3.5): one ``nn.Linear``; ``num_classes`` outputs, 1 for a regression."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
    net.apply(_init_normal)
    return net


@register_model
def mlp(
    in_features: int,
    num_classes: int = 1,
    hidden: Sequence[int] = (256, 256),
    dropout: float | Sequence[float] = (0.2, 0.5),
) -> nn.Module:
    """MLP with ReLU and dropout after every hidden layer (d2l 5.6: 256-256, dropout 0.2 then 0.5).

    ``dropout`` is one rate for every hidden layer or one per layer.
    """
    rates = [dropout] * len(hidden) if isinstance(dropout, int | float) else list(dropout)
    if len(rates) != len(hidden):
        raise ValueError(f"{len(rates)} dropout rates for {len(hidden)} hidden layers")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size, rate in zip(hidden, rates, strict=True):
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(rate)]
        width = size
    net = nn.Sequential(*layers, nn.Linear(width, num_classes))
    net.apply(_init_normal)
    return net
