"""Depthwise convolutions whose weight gradient oneDNN computes slowly on small maps: the same gradient, faster.

On a CPU, oneDNN's weight gradient of a depthwise convolution (one filter per channel) over a small map is
about ten times slower than the convolution's forward and input gradient together: 31 ms of a 33 ms backward for
efficientnet-lite0's 5 x 5 filters on 1,152 channels of 3 x 3 maps (batch 32, 2-core CPU, torch 2.14). That
gradient is itself a depthwise convolution: of the input by the output's gradient, with one group per (channel,
sample) pair, stride and dilation swapped, summed over the samples. Run that way, as a forward convolution,
oneDNN takes a few milliseconds. Training efficientnet-lite0 with its first three layer groups frozen: a step
1.3x faster at 96 px, 1.2x at 112 px, 1.0x at 224 px (maps of 7 x 7 and more keep oneDNN's own gradient: there
the rewrite is no faster).

Only where :func:`rewrite_applies` says so (a CPU, a trainable depthwise filter, a map of at most ``SMALL_MAP``
pixels, gradients on); everything else, a GPU included, is ``F.conv2d`` as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 49  # pixels (7 x 7): above it oneDNN's own weight gradient is as fast (measured at 12 x 12 and more)


def rewrite_applies(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether :func:`conv2d` computes this convolution's weight gradient itself: on a CPU, for a depthwise
    filter (one input and one output channel per group) that trains, on a map of at most ``SMALL_MAP`` pixels."""
    return (x.device.type == "cpu" and groups > 1 and groups == x.shape[1] == weight.shape[0]
            and weight.shape[1] == 1 and x.shape[-2] * x.shape[-1] <= SMALL_MAP
            and weight.requires_grad and torch.is_grad_enabled())


class _DepthwiseConv(torch.autograd.Function):
    """``F.conv2d`` with groups = channels; the backward computes the weight gradient as a forward convolution."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = stride, padding, dilation
        return F.conv2d(x, weight, bias, stride, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        channels, dtype = weight.shape[0], grad.dtype  # under autocast the output (and grad) may be bf16
        xs, ws = x.to(dtype), weight.to(dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, xs, ws, None, stride, padding, dilation, False,
                                                         [0, 0], channels, [True, False, False])[0].to(x.dtype)
        if ctx.needs_input_grad[1]:
            n, _, h, w = x.shape
            kh, kw = weight.shape[-2:]
            # dW[c, a, b] = sum_n sum_ij grad[n, c, i, j] * x[n, c, s*i + d*a - p, s*j + d*b - p]: the input
            # convolved by the output's gradient, one group per (channel, sample), stride and dilation swapped
            inputs = xs.transpose(0, 1).reshape(1, channels * n, h, w)
            filters = grad.transpose(0, 1).reshape(channels * n, 1, *grad.shape[-2:])
            out = F.conv2d(inputs, filters, None, dilation, padding, stride, channels * n)
            grad_w = out[..., :kh, :kw].reshape(channels, n, kh, kw).sum(1, keepdim=True).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3)).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation,
           groups: int) -> torch.Tensor:
    """``F.conv2d`` (integer padding), with the weight gradient computed as above where :func:`rewrite_applies`."""
    if rewrite_applies(x, weight, groups):
        return _DepthwiseConv.apply(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation))
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding given in pixels) through :func:`conv2d`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def fast_depthwise_gradients(model: nn.Module) -> int:
    """Turn every plain depthwise ``nn.Conv2d`` of ``model`` (zero padding in pixels) into a
    :class:`DepthwiseConv2d`, in place (same parameters, same names); returns how many."""
    changed = 0
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels
                == module.out_channels and module.padding_mode == "zeros" and not isinstance(module.padding, str)):
            module.__class__ = DepthwiseConv2d
            changed += 1
    return changed
