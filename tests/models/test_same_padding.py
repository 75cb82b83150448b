"""The CPU convolution rewrites of ``create_model`` give torch's values: TensorFlow "SAME" padding inside the
convolution (timm's ``Conv2dSame`` outputs and gradients, for every parity of the input size) and the depthwise
weight gradient computed as a forward convolution (torch's gradients, under bf16 autocast too)."""
from __future__ import annotations

import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame

from models import create_model
from models._depthwise import fast_depthwise_gradients, rewrite_applies
from models._same_padding import SamePadConv2d, pad_inside_convolutions


@pytest.mark.parametrize(("kernel", "stride", "groups", "size"), [
    (3, 2, 8, (48, 48)),   # even input: one pixel more on the right (the kernel grows a zero column in front)
    (5, 2, 8, (13, 13)),   # odd input: symmetric
    (3, 2, 1, (10, 11)),   # one side of each parity
    (4, 2, 1, (9, 10)),    # even kernel
    (3, 3, 8, (17, 16)),   # stride 3
    (1, 2, 1, (8, 8)),     # no padding at all
])
def test_same_outputs_and_gradients_as_timm(kernel: int, stride: int, groups: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    timm_conv = Conv2dSame(8, 8, kernel, stride, groups=groups, bias=True)
    ours = Conv2dSame(8, 8, kernel, stride, groups=groups, bias=True)
    ours.load_state_dict(timm_conv.state_dict())
    assert pad_inside_convolutions(ours) == 1 and type(ours) is SamePadConv2d
    x = torch.randn(2, 8, *size).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = timm_conv(x1), ours(x2)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, timm_conv.weight.grad, rtol=1e-4, atol=1e-4)


def test_dilated_convolutions_stay_as_timm_built_them() -> None:
    conv = Conv2dSame(4, 4, 3, 2, dilation=2)
    assert pad_inside_convolutions(conv) == 0 and type(conv) is Conv2dSame


def test_create_model_pads_inside_the_convolutions_of_tf_ports() -> None:
    model = create_model("tf_efficientnet_lite0", 3)
    kinds = {type(m) for m in model.modules()}
    assert SamePadConv2d in kinds and Conv2dSame not in kinds
    assert "conv_stem.weight" in model.state_dict()  # same parameter names: old checkpoints still load


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation", "size"), [
    (5, 1, 2, 1, (3, 3)),   # efficientnet-lite0's last stage at 96 px
    (3, 2, 1, 1, (7, 6)),
    (6, 2, 2, 1, (6, 6)),   # a SAME-padded stride-2 filter with its zero row in front
    (3, 1, 2, 2, (5, 5)),   # dilated
])
@pytest.mark.parametrize("frozen_input", [False, True])
def test_depthwise_gradients_as_torch(kernel, stride, padding, dilation, size, frozen_input: bool) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, kernel, stride, padding, dilation, groups=16, bias=True)
    ours = torch.nn.Conv2d(16, 16, kernel, stride, padding, dilation, groups=16, bias=True)
    ours.load_state_dict(conv.state_dict())
    assert fast_depthwise_gradients(ours) == 1
    x = torch.randn(4, 16, *size).contiguous(memory_format=torch.channels_last)
    assert rewrite_applies(x, ours.weight, 16)
    x1, x2 = x.clone().requires_grad_(not frozen_input), x.clone().requires_grad_(not frozen_input)
    y1, y2 = conv(x1), ours(x2)
    torch.testing.assert_close(y2, y1)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    for mine, theirs in ((ours.weight.grad, conv.weight.grad), (ours.bias.grad, conv.bias.grad),
                         (x2.grad, x1.grad)):
        if theirs is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_the_rewrite_runs_only_where_it_pays() -> None:
    weight = torch.nn.Parameter(torch.randn(8, 1, 3, 3))
    small, large = torch.randn(2, 8, 7, 7), torch.randn(2, 8, 8, 8)
    assert rewrite_applies(small, weight, 8)
    assert not rewrite_applies(large, weight, 8)  # above SMALL_MAP oneDNN's own gradient is as fast
    assert not rewrite_applies(small, weight.detach(), 8)  # a frozen filter needs no weight gradient
    assert not rewrite_applies(small, torch.nn.Parameter(torch.randn(8, 4, 3, 3)), 2)  # grouped, not depthwise
    with torch.no_grad():
        assert not rewrite_applies(small, weight, 8)


def test_depthwise_gradient_under_cpu_bf16_autocast() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 5, 1, 2, groups=8)
    fast_depthwise_gradients(conv)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    reference = torch.nn.Conv2d(8, 8, 5, 1, 2, groups=8)
    reference.load_state_dict(conv.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    reference(x_ref).sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad, rtol=0.05, atol=0.05)
