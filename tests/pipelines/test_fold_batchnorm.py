"""Batch norm folded into the convolution before it: the same function, fewer passes over the activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import create_model
from pipelines.competitions.leaves.train import fold_frozen_norms, freeze_early
from pipelines.core.fold_batchnorm import fold_batchnorm
from pipelines.core.training import Trainer


def n_norms(model: nn.Module) -> int:
    return sum(type(m).__name__.endswith(("BatchNorm2d", "BatchNormAct2d")) for m in model.modules())


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    torch.manual_seed(0)
    return create_model("tf_efficientnet_lite0", 5, pretrained=True).eval()


def images(n: int = 4, side: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_every_norm_folds_for_inference_and_the_outputs_stay(lite0):
    before = n_norms(lite0)
    folded, count = fold_batchnorm(lite0, images(2))
    assert count == before > 40  # efficientnet-lite0: every conv is followed by its norm
    assert n_norms(folded) == 0 and n_norms(lite0) == before  # a copy; the original is untouched
    x = images(6, seed=2)
    with torch.no_grad():
        want, got = lite0(x), folded.eval()(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_while_training_only_frozen_layers_fold_and_training_is_unchanged():
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 5, pretrained=True)
    frozen = freeze_early(model, 3)
    n_frozen = sum(type(m).__name__.startswith("Frozen") for m in model.modules())
    folded = fold_frozen_norms(model, 64)
    assert n_frozen > 0 and n_norms(folded) == n_norms(model) - n_frozen  # trainable norms all stay
    in_frozen = [p for name, p in folded.named_parameters() if name.startswith(tuple(f + "." for f in frozen))]
    assert in_frozen and not any(p.requires_grad for p in in_frozen)  # the folded biases are frozen too
    assert [n for n, p in folded.named_parameters() if p.requires_grad] == \
        [n for n, p in model.named_parameters() if p.requires_grad]  # the optimizer sees the same tensors
    x = images(8, seed=3)
    outs, grads = [], []
    for net in (model, folded):
        net.train()
        out = net(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(next(p for p in net.parameters() if p.requires_grad).grad.clone())
    assert torch.allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4 * float(outs[0].abs().max()))
    # fp32 rounding through batch statistics of 8 images: gradients agree to about 0.3 %, a wrong fold by far more
    assert torch.allclose(grads[1], grads[0], rtol=1e-2, atol=1e-2 * float(grads[0].abs().max()))


class TapsTheConv(nn.Module):
    """The conv's output goes to the norm *and* round it: folding the norm in would change the residual."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_var.fill_(4.0)
            self.bn.running_mean.fill_(0.5)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_whose_output_is_used_elsewhere_is_left_alone():
    torch.manual_seed(0)
    model = TapsTheConv().eval()
    with pytest.warns(UserWarning, match="left unfolded"):
        kept, count = fold_batchnorm(model, images(2, side=8))
    assert kept is model and count == 0


def test_a_model_without_conv_and_norm_comes_back_as_it_is():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    assert fold_batchnorm(mlp, torch.zeros(2, 4)) == (mlp, 0)


def test_trainer_predictions_are_the_unfolded_models_and_its_weights_keep_their_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 3))
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    x, y = images(16, side=12), torch.randint(0, 3, (16,))
    trainer.fit([(x[:8], y[:8]), (x[8:], y[8:])], epochs=2)  # running statistics move away from 0 and 1
    assert not torch.allclose(net[1].running_var, torch.ones(8))
    with torch.no_grad():
        want = net.eval()(x)
    got = trainer.predict([x[:10], x[10:]])
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    assert isinstance(trainer.eval_model[1], nn.BatchNorm2d)  # the training weights are never folded
    assert trainer.evaluate([(x, y)])["val_acc"] == float((want.argmax(1) == y).float().mean())
