"""Image loading, transforms, the seeded dataset and sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from features.images import (
    ImageDataset,
    SeededSampler,
    eval_transform,
    load_images,
    load_rgb,
    train_transform,
    tta_views,
)
from pipelines.core.errors import PipelineError

MEAN = STD = (0.5, 0.5, 0.5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "P-transparent", "I;16", "CMYK", "1"])
def test_any_mode_loads_as_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "P-transparent":
        img = base.convert("P")
        img.info["transparency"] = 0
    elif mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16))
    else:
        img = base.convert(mode)
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    img.save(path, transparency=0) if mode == "P-transparent" else img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match="not found.*nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(PipelineError, match="cannot read image .*bad.jpg"):
        load_images([bad], 16)
    truncated = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), "green").save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(PipelineError, match="cut.jpg"):
        load_rgb(truncated)


def test_load_images_resizes_shorter_side(tmp_path):
    Image.new("RGB", (80, 40), "red").save(tmp_path / "a.png")
    (img,) = load_images([tmp_path / "a.png"], 20)
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 20, 40)


def test_transforms_shapes_and_seeded_augmentation():
    images = [torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8) for _ in range(3)]
    ds = ImageDataset(images, [0, 1, 2], train_transform(32, MEAN, STD, auto_augment="rand"))
    x, y = ds[(1, 123)]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    assert torch.equal(ds[(1, 123)][0], x)  # same seed, same augmentation
    assert not torch.equal(ds[(1, 124)][0], x)
    ev = ImageDataset(images, None, eval_transform(32, MEAN, STD))
    xe, ye = ev[0]
    assert xe.shape == (3, 32, 32) and ye == -1
    assert [v(torch.ones(1, 3, 2, 2)).shape for v in tta_views(4)] == [(1, 3, 2, 2)] * 4


def test_seeded_item_leaves_the_callers_rng_alone():
    """Augmenting sample i with its seed must not reseed torch's global RNG: the caller's next draws
    (dropout, mixup) are those it would have made without loading a batch."""
    images = [torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8) for _ in range(2)]
    ds = ImageDataset(images, [0, 1], train_transform(32, MEAN, STD, auto_augment="rand"))
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    first = ds[(0, 123)][0]
    assert torch.equal(torch.rand(5), expected)
    torch.manual_seed(99)  # a different caller state gives the same augmentation
    assert torch.equal(ds[(0, 123)][0], first)


def test_bad_auto_augment_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="auto-augment"):
        train_transform(32, MEAN, STD, auto_augment="bogus")


def test_seeded_sampler_is_a_function_of_seed_and_epoch():
    s = SeededSampler(10, shuffle=True, seed=3)
    first = list(s)
    assert sorted(i for i, _ in first) == list(range(10))
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    shards = [list(SeededSampler(10, shuffle=True, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(10))
    assert len(SeededSampler(10, shuffle=True, seed=3, rank=0, world_size=2)) == 5


def test_light_augmentation_leaves_out_rotation_and_jitter():
    light_transform = train_transform(32, MEAN, STD, auto_augment="none", rotation=0, jitter=0)
    light = [type(t).__name__ for t in light_transform.transforms]
    strong = [type(t).__name__ for t in train_transform(32, MEAN, STD, auto_augment="trivial").transforms]
    assert "RandomRotation" not in light and "ColorJitter" not in light and "TrivialAugmentWide" not in light
    assert {"RandomRotation", "ColorJitter", "TrivialAugmentWide"} <= set(strong)
