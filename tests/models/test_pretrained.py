"""Offline pretrained weights: the converted efficientnet-lite0 must still be an ImageNet classifier."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_sample_image
from torchvision.transforms import v2

from models.pretrained import (
    convert_in_order,
    create_backbone,
    input_stats,
    pretrained_state_dict,
)
from pipelines.errors import PipelineError

DAISY = 985


def test_converted_lite0_sees_a_daisy(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_PIPELINES_CACHE", str(tmp_path))  # convert for real, not from the cache
    model = create_backbone("tf_efficientnet_lite0", num_classes=1000).eval()
    assert (tmp_path / "pretrained" / "tf_efficientnet_lite0.pth").is_file()
    mean, std = input_stats(model)
    assert mean == std == (0.5, 0.5, 0.5)
    image = torch.from_numpy(load_sample_image("flower.jpg").copy()).permute(2, 0, 1)
    prep = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])
    with torch.no_grad():
        top5 = model(prep(image)[None]).topk(5).indices[0].tolist()
    assert DAISY in top5
    cached = pretrained_state_dict("tf_efficientnet_lite0")  # second call reads the cache
    assert torch.equal(cached["conv_stem.weight"], model.state_dict()["conv_stem.weight"])


def test_new_head_keeps_the_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_PIPELINES_CACHE", str(tmp_path))
    model = create_backbone("tf_efficientnet_lite0", num_classes=7)
    assert model.classifier.out_features == 7
    ref = pretrained_state_dict("tf_efficientnet_lite0")
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pwl.weight"], ref["blocks.6.0.conv_pwl.weight"])


def test_pretrained_file_loads_local_weights(tmp_path):
    src = create_backbone("test_efficientnet", num_classes=5, pretrained=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pth")
    model = create_backbone("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "w.pth")
    assert torch.equal(model.state_dict()["conv_stem.weight"], src.state_dict()["conv_stem.weight"])
    with pytest.raises(PipelineError, match="not found"):
        create_backbone("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "missing.pth")


def test_conversion_refuses_mismatches():
    target = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert set(convert_in_order({"x": torch.ones(2, 3), "y": torch.ones(4)}, target)) == {"a", "b"}
    with pytest.raises(PipelineError, match="does not fit"):
        convert_in_order({"x": torch.ones(3, 2), "y": torch.ones(4)}, target)
    with pytest.raises(PipelineError, match="tensors"):
        convert_in_order({"x": torch.ones(2, 3)}, target)
