"""Our models against literal transcriptions of the book's definitions (d2l.ai, PyTorch edition,
Fashion-MNIST: 1 channel, 10 classes, at the input size each chapter trains at).

Parameter counts must be equal, and loading the book net's tensors into ours (by position) must give
the same outputs: the adaptive pools we add to free the input size are no-ops at the book's size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models

# ------------------------------------------------------------------ the book, transcribed


def book_lenet():  # d2l 7.6, 28x28
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def book_lenet_bn():  # d2l 8.5 (concise), 28x28
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, 10))


def book_alexnet():  # d2l 8.1, 224x224
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


def book_vgg11():  # d2l 8.2, 224x224
    def vgg_block(num_convs, in_channels, out_channels):
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    conv_arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    conv_blks = []
    in_channels = 1
    for (num_convs, out_channels) in conv_arch:
        conv_blks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    return nn.Sequential(
        *conv_blks, nn.Flatten(),
        nn.Linear(out_channels * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 10))


def book_nin():  # d2l 8.3, 224x224
    def nin_block(in_channels, out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU())

    return nn.Sequential(
        nin_block(1, 96, kernel_size=11, strides=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        nin_block(384, 10, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten())


class BookInception(nn.Module):  # d2l 8.4
    def __init__(self, in_channels, c1, c2, c3, c4, **kwargs):
        super().__init__(**kwargs)
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

    def forward(self, x):
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((p1, p2, p3, p4), dim=1)


def book_googlenet():  # d2l 8.4, 96x96
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
                       nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b3 = nn.Sequential(BookInception(192, 64, (96, 128), (16, 32), 32),
                       BookInception(256, 128, (128, 192), (32, 96), 64),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b4 = nn.Sequential(BookInception(480, 192, (96, 208), (16, 48), 64),
                       BookInception(512, 160, (112, 224), (24, 64), 64),
                       BookInception(512, 128, (128, 256), (24, 64), 64),
                       BookInception(512, 112, (144, 288), (32, 64), 64),
                       BookInception(528, 256, (160, 320), (32, 128), 128),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b5 = nn.Sequential(BookInception(832, 256, (160, 320), (32, 128), 128),
                       BookInception(832, 384, (192, 384), (48, 128), 128),
                       nn.AdaptiveAvgPool2d((1, 1)),
                       nn.Flatten())
    return nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, 10))


class BookResidual(nn.Module):  # d2l 8.6
    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def book_resnet18():  # d2l 8.6, 96x96
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

    def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(BookResidual(input_channels, num_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(BookResidual(num_channels, num_channels))
        return blk

    b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*resnet_block(64, 128, 2))
    b4 = nn.Sequential(*resnet_block(128, 256, 2))
    b5 = nn.Sequential(*resnet_block(256, 512, 2))
    return nn.Sequential(b1, b2, b3, b4, b5,
                         nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Flatten(), nn.Linear(512, 10))


def book_conv_block(input_channels, num_channels):  # d2l 8.7
    return nn.Sequential(
        nn.BatchNorm2d(input_channels), nn.ReLU(),
        nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1))


class BookDenseBlock(nn.Module):  # d2l 8.7
    def __init__(self, num_convs, input_channels, num_channels):
        super().__init__()
        layer = []
        for i in range(num_convs):
            layer.append(book_conv_block(num_channels * i + input_channels, num_channels))
        self.net = nn.Sequential(*layer)

    def forward(self, X):
        for blk in self.net:
            Y = blk(X)
            X = torch.cat((X, Y), dim=1)
        return X


def book_densenet():  # d2l 8.7, 96x96
    def transition_block(input_channels, num_channels):
        return nn.Sequential(
            nn.BatchNorm2d(input_channels), nn.ReLU(),
            nn.Conv2d(input_channels, num_channels, kernel_size=1),
            nn.AvgPool2d(kernel_size=2, stride=2))

    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    num_channels, growth_rate = 64, 32
    num_convs_in_dense_blocks = [4, 4, 4, 4]
    blks = []
    for i, num_convs in enumerate(num_convs_in_dense_blocks):
        blks.append(BookDenseBlock(num_convs, num_channels, growth_rate))
        num_channels += num_convs * growth_rate
        if i != len(num_convs_in_dense_blocks) - 1:
            blks.append(transition_block(num_channels, num_channels // 2))
            num_channels = num_channels // 2
    return nn.Sequential(
        b1, *blks,
        nn.BatchNorm2d(num_channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(num_channels, 10))


def book_mlp():  # d2l 5.6, dropout 0.2 then 0.5
    return nn.Sequential(nn.Flatten(),
                         nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(256, 10))


# name -> (book net, input side, kwargs for our model)
BOOK = {
    "lenet": (book_lenet, 28, {}),
    "lenet_bn": (book_lenet_bn, 28, {}),
    "alexnet": (book_alexnet, 224, {}),
    "vgg11": (book_vgg11, 224, {}),
    "nin": (book_nin, 224, {}),
    "googlenet": (book_googlenet, 96, {}),
    "resnet18_d2l": (book_resnet18, 96, {}),
    "densenet_d2l": (book_densenet, 96, {}),
}


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_every_cnn_has_a_book_reference() -> None:
    assert set(BOOK) == set(models.list_models(module="cnn"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("alexnet", "vgg11") else n
                                  for n in sorted(BOOK)])  # two 47M / 129M-parameter nets at 224 px
def test_cnn_matches_the_book(name: str) -> None:
    book_fn, side, kwargs = BOOK[name]
    torch.manual_seed(0)
    ref, ours = book_fn().eval(), models.create_model(name, num_classes=10, in_chans=1, **kwargs).eval()
    assert _count(ours) == _count(ref)
    assert models.get_model_cfg(name)["input_size"] == (1, side, side)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert len(ref_state) == len(our_state)
    with torch.no_grad():
        for (rk, rv), (ok, ov) in zip(ref_state.items(), our_state.items(), strict=True):
            assert rv.shape == ov.shape, (rk, ok)
            ov.copy_(rv)
        x = torch.randn(2, 1, side, side)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, layer", [("rnn_classifier", nn.RNN), ("gru_classifier", nn.GRU),
                                         ("lstm_classifier", nn.LSTM)])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_row_classifier_counts(name: str, layer: type[nn.Module], num_layers: int, bidirectional: bool) -> None:
    ours = models.create_model(name, num_classes=10, in_chans=3, img_size=32, hidden_size=64,
                               num_layers=num_layers, bidirectional=bidirectional)
    d = 2 if bidirectional else 1
    ref = nn.ModuleList([layer(32 * 3, 64, num_layers=num_layers, bidirectional=bidirectional),
                         nn.Linear(64 * d, 10)])
    assert _count(ours) == _count(ref)


def test_tabular_counts() -> None:
    assert _count(models.create_model("mlp", in_features=784, num_classes=10)) == _count(book_mlp())
    assert _count(models.create_model("linear", in_features=331)) == _count(nn.Linear(331, 1))
