"""The d2l ladder of classic CNNs, from LeNet to DenseNet, as from-scratch baselines.

Layers follow the book's PyTorch definitions (d2l.ai chapters 7-8). One change keeps the input size
free: where the book flattens a fixed-size feature map into a dense layer, an adaptive average pool to
that size comes first (a no-op at the book's input size, so parameter counts are the book's).
Architectures with a stride-4 stem and unpadded pools (AlexNet, NiN) cannot shrink below their
``min_input_size``; the registry records it. Init: Xavier-uniform conv and linear weights, as the
book's ``init_cnn`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models._registry import register_model

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def init_cnn(module: nn.Module) -> None:
    """d2l's ``init_cnn``: Xavier-uniform weights for every conv and linear layer, biases untouched."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)


def _finish(net: nn.Module) -> nn.Module:
    net.apply(init_cnn)
    return net


# ---------------------------------------------------------------- LeNet (d2l 7.6, 8.5)


@register_model(input_size=(1, 28, 28), min_input_size=(1, 12, 12))
def lenet(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """LeNet-5 with sigmoids and average pooling (d2l 7.6); Xavier init."""
    return _finish(nn.Sequential(
        nn.Conv2d(in_chans, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    ))


@register_model(input_size=(1, 28, 28), min_input_size=(1, 16, 16))
def lenet_bn(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """LeNet with batch norm after every conv and hidden dense layer (d2l 8.5); Xavier init."""
    return _finish(nn.Sequential(
        nn.Conv2d(in_chans, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    ))


# ---------------------------------------------------------------- AlexNet (d2l 8.1)


@register_model(input_size=(1, 224, 224), min_input_size=(1, 65, 65))
def alexnet(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> nn.Module:
    """AlexNet as in d2l 8.1 (one tower, 96-256-384-384-256 convs, two 4096 dense layers); Xavier init."""
    return _finish(nn.Sequential(
        nn.Conv2d(in_chans, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(256 * 5 * 5, 4096), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(4096, num_classes),
    ))


# ---------------------------------------------------------------- VGG (d2l 8.2)


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """``num_convs`` 3x3 same-padding convs with ReLU, then a 2x2 max pool halving the resolution."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(
    conv_arch: tuple[tuple[int, int], ...] = VGG11_ARCH,
    num_classes: int = 10,
    in_chans: int = 3,
    fc_features: int = 4096,
    dropout: float = 0.5,
) -> nn.Module:
    """VGG from ``conv_arch`` = ((num_convs, out_channels), ...) blocks (d2l 8.2); Xavier init.

    The book trains a narrow VGG-11 by dividing every width by 4: ``conv_arch=[(n, c // 4) ...]``.
    """
    blocks, channels = [], in_chans
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, channels, out_channels))
        channels = out_channels
    return _finish(nn.Sequential(
        *blocks, nn.AdaptiveAvgPool2d(7), nn.Flatten(),
        nn.Linear(channels * 7 * 7, fc_features), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(fc_features, fc_features), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(fc_features, num_classes),
    ))


@register_model(input_size=(1, 224, 224), min_input_size=(1, 32, 32))
def vgg11(num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """VGG-11 (8 convs in 5 blocks + 3 dense layers), d2l 8.2; shadows timm's ``vgg11``; Xavier init."""
    return vgg(VGG11_ARCH, num_classes=num_classes, in_chans=in_chans, **kwargs)


# ---------------------------------------------------------------- NiN (d2l 8.3)


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    """One spatial conv followed by two 1x1 convs: a per-pixel MLP over channels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


@register_model(input_size=(1, 224, 224), min_input_size=(1, 67, 67))
def nin(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> nn.Module:
    """Network in Network (d2l 8.3): no dense layers, a global average pool over class maps; Xavier init."""
    return _finish(nn.Sequential(
        nin_block(in_chans, 96, kernel_size=11, stride=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, stride=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(dropout),
        nin_block(384, num_classes, kernel_size=3, stride=1, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ))


# ---------------------------------------------------------------- GoogLeNet (d2l 8.4)


class Inception(nn.Module):
    """Four parallel paths (1x1; 1x1-3x3; 1x1-5x5; pool-1x1) concatenated on channels."""

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int):
        super().__init__()
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((p1, p2, p3, p4), dim=1)


@register_model(input_size=(1, 96, 96), min_input_size=(1, 1, 1))
def googlenet(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """GoogLeNet (d2l 8.4): a 7x7 stem, nine Inception blocks, global average pool; Xavier init."""
    pool = dict(kernel_size=3, stride=2, padding=1)
    return _finish(nn.Sequential(
        nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(**pool),
        nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
        nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(**pool),
        Inception(192, 64, (96, 128), (16, 32), 32),
        Inception(256, 128, (128, 192), (32, 96), 64), nn.MaxPool2d(**pool),
        Inception(480, 192, (96, 208), (16, 48), 64),
        Inception(512, 160, (112, 224), (24, 64), 64),
        Inception(512, 128, (128, 256), (24, 64), 64),
        Inception(512, 112, (144, 288), (32, 64), 64),
        Inception(528, 256, (160, 320), (32, 128), 128), nn.MaxPool2d(**pool),
        Inception(832, 256, (160, 320), (32, 128), 128),
        Inception(832, 384, (192, 384), (48, 128), 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(1024, num_classes),
    ))


# ---------------------------------------------------------------- ResNet (d2l 8.6)


class Residual(nn.Module):
    """Two 3x3 conv-BN layers plus the input (through a strided 1x1 conv when the shape changes)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = (
            nn.Conv2d(in_channels, num_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        )
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


def _stem(in_chans: int) -> nn.Sequential:
    """The ResNet/DenseNet stem: 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def resnet_stage(
    in_channels: int, num_channels: int, num_residuals: int, first: bool = False
) -> nn.Sequential:
    """``num_residuals`` blocks; all but the first stage halve the resolution in their first block."""
    blocks = [
        Residual(in_channels, num_channels, use_1x1conv=True, stride=2) if i == 0 and not first
        else Residual(num_channels, num_channels)
        for i in range(num_residuals)
    ]
    return nn.Sequential(*blocks)


@register_model(input_size=(1, 96, 96), min_input_size=(1, 1, 1))
def resnet18_d2l(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """ResNet-18 from d2l residual blocks (8.6): stem, 4 stages of 2 blocks, global pool; Xavier init."""
    return _finish(nn.Sequential(
        _stem(in_chans),
        resnet_stage(64, 64, 2, first=True), resnet_stage(64, 128, 2),
        resnet_stage(128, 256, 2), resnet_stage(256, 512, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes),
    ))


# ---------------------------------------------------------------- DenseNet (d2l 8.7)


def _bn_relu_conv(in_channels: int, num_channels: int) -> nn.Sequential:
    """DenseNet's pre-activation conv block: BN, ReLU, 3x3 conv."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1)
    )


class DenseBlock(nn.Module):
    """``num_convs`` conv blocks, each seeing the concatenation of the input and all earlier outputs."""

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int):
        super().__init__()
        self.net = nn.Sequential(
            *(_bn_relu_conv(in_channels + i * growth_rate, growth_rate) for i in range(num_convs))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.net:
            x = torch.cat((x, blk(x)), dim=1)
        return x


def transition_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """BN, ReLU, 1x1 conv to ``num_channels``, 2x2 average pool: shrinks width and resolution."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, num_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )


@register_model(input_size=(1, 96, 96), min_input_size=(1, 29, 29))
def densenet_d2l(
    num_classes: int = 10, in_chans: int = 3, growth_rate: int = 32, arch: tuple[int, ...] = (4, 4, 4, 4)
) -> nn.Module:
    """DenseNet of d2l 8.7: 4 dense blocks of 4 convs, growth 32, halving transitions; Xavier init."""
    layers: list[nn.Module] = [_stem(in_chans)]
    channels = 64
    for i, num_convs in enumerate(arch):
        layers.append(DenseBlock(num_convs, channels, growth_rate))
        channels += num_convs * growth_rate
        if i != len(arch) - 1:
            layers.append(transition_block(channels, channels // 2))
            channels //= 2
    return _finish(nn.Sequential(
        *layers, nn.BatchNorm2d(channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes),
    ))
