"""The registry contract: every family is registered, lookups and filters work, unset arguments keep
the model's defaults, timm names pass through, and unknown names fail in one line with suggestions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from models import cnn, rnn
from models._registry import register_model
from pipelines.core.errors import PipelineError

CLASSIC = {
    "cnn": {"lenet", "lenet_bn", "alexnet", "vgg11", "nin", "googlenet", "resnet18_d2l", "densenet_d2l"},
    "rnn": {"rnn_classifier", "gru_classifier", "lstm_classifier"},
    "tabular": {"linear", "mlp"},
}


def test_every_family_is_registered() -> None:
    # registration is an import side effect: a family missing from models/__init__ would vanish silently
    for family, names in CLASSIC.items():
        assert set(models.list_models(module=family)) == names
    assert set(models.list_models()) >= set().union(*CLASSIC.values())
    assert models.list_models() == sorted(models.list_models())


def test_list_models_filters() -> None:
    assert models.list_models("lenet*") == ["lenet", "lenet_bn"]
    assert models.list_models("*_classifier", module="rnn") == ["gru_classifier", "lstm_classifier", "rnn_classifier"]
    assert models.list_models("*_classifier", module="cnn") == []
    assert models.list_models(module=["cnn", "rnn"]) == sorted(CLASSIC["cnn"] | CLASSIC["rnn"])


def test_none_arguments_keep_model_defaults() -> None:
    model = models.create_model("lenet", num_classes=None, in_chans=None)
    assert model[0].in_channels == 3 and model[-1].out_features == 10
    assert model.pretrained_cfg["input_size"] == (3, 28, 28)
    model = models.create_model("gru_classifier", num_classes=5, in_chans=1, hidden_size=None, num_layers=2)
    assert model.rnn.hidden_size == 128 and model.rnn.num_layers == 2 and model.head.out_features == 5
    assert model.pretrained_cfg["min_input_size"] == (1, 1, 1)


def test_factory_kwargs_reach_the_model() -> None:
    model = models.create_model("lstm_classifier", num_classes=3, in_chans=3, bidirectional=True, img_size=16)
    assert isinstance(model.rnn, rnn.LSTM) and model.rnn.num_directions == 2
    assert model(torch.randn(2, 3, 40, 24)).shape == (2, 3)
    narrow = cnn.vgg(tuple((n, c // 8) for n, c in cnn.VGG11_ARCH), num_classes=4, in_chans=1, fc_features=64)
    assert narrow(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_our_vgg11_shadows_timm() -> None:
    model = models.create_model("vgg11", num_classes=4)
    assert isinstance(model, nn.Sequential) and model[-1].out_features == 4


def test_timm_names_pass_through_without_weights() -> None:
    model = models.create_model("resnet10t", num_classes=6, in_chans=1)
    assert type(model).__module__.startswith("timm.")
    assert model.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 6)
    # pretrained=False always: two builds differ, so nothing was loaded from anywhere
    again = models.create_model("resnet10t", num_classes=6, in_chans=1)
    assert not torch.equal(model.conv1[0].weight, again.conv1[0].weight)


def test_unknown_name_is_one_line_with_close_matches() -> None:
    with pytest.raises(PipelineError) as info:
        models.create_model("resnet18_dl2")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown model 'resnet18_dl2'")
    assert "resnet18_d2l" in message.split("close matches:")[1]
    with pytest.raises(PipelineError, match="gru_classifier"):
        models.create_model("gru_clasifier")
    with pytest.raises(PipelineError, match="list_models"):
        models.create_model("zzqqxx")


def test_registering_a_name_twice_is_refused() -> None:
    def lenet() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="twice"):
        register_model(lenet)
