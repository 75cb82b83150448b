"""Image decoding into the uint8 cache, its batches, and the batched augmentation on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import features.augment as augment
from features.augment import BatchAugment, View
from features.batches import TensorBatches
from features.images import (
    decode_cache,
    header_sizes,
    load_images,
    load_rgb,
    median_aspect,
    median_side,
    pixel_range,
    stretch_,
)
from features.symmetry import ELEMENTS, Symmetry
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
        decode_cache([bad], 16)
    truncated = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), "green").save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(PipelineError, match="cut.jpg"):
        load_rgb(truncated)


def test_load_images_resizes_shorter_side(tmp_path):
    Image.new("RGB", (80, 40), "red").save(tmp_path / "a.png")
    (img,) = load_images([tmp_path / "a.png"], 20)
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 20, 40)


def test_cache_is_the_centre_square_in_ram_or_a_mapped_file_that_leaves_nothing(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 255  # the centre square of a wide image is white, its sides black
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.new("RGB", (30, 30), "blue").save(tmp_path / "b.png")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    ram = decode_cache(paths, 20)
    assert ram.dtype == torch.uint8 and tuple(ram.shape) == (2, 3, 20, 20)
    assert ram[0].float().mean() > 250 and ram[1, 2].float().mean() > 250 and ram[1, 0].float().mean() < 5
    spilled = decode_cache(paths, 20, spill_dir=tmp_path / "spill", bound=100)  # over the bound: memory-mapped
    assert torch.equal(spilled, ram) and list((tmp_path / "spill").iterdir()) == []


def test_a_squashed_cache_keeps_the_whole_wide_image_where_the_centre_square_drops_its_sides(tmp_path):
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, :40, 0] = arr[:, 80:, 2] = 255  # red left third, black middle, blue right third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    crop, squash = (decode_cache([tmp_path / "wide.png"], 24, squash=s)[0].float() for s in (False, True))
    assert tuple(squash.shape) == (3, 24, 24) and crop.mean() < 5  # the centre square holds only the black middle
    assert squash[0, :, :6].mean() > 250 and squash[2, :, -6:].mean() > 250 and squash[:, :, 10:14].mean() < 5


def test_the_pixel_range_ignores_a_few_hot_pixels_and_the_stretch_rewrites_a_mapped_cache_in_place(tmp_path):
    for i in range(3):
        arr = np.full((16, 16, 3), 20 + 10 * i, np.uint8)
        arr[4:12, 4:12] = 60
        arr[0, 0] = 255  # one hot pixel in 256 does not set the range
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
    cache = decode_cache([tmp_path / f"{i}.png" for i in range(3)], 16, spill_dir=tmp_path / "spill", bound=10)
    assert pixel_range(cache, (0.01, 0.99)) == (20, 60)
    assert stretch_(cache, 20, 60) is cache
    assert cache.min() == 0 and cache.max() == 255 and cache[0, :, 8, 8].tolist() == [255] * 3
    assert cache[1, 0, 2, 2] == round((30 - 20) * 255 / 40)


def test_median_aspect_counts_portrait_and_landscape_alike():
    assert median_aspect(np.array([[30, 30], [40, 40], [60, 61]])) == pytest.approx(1.0)
    assert median_aspect(np.array([[60, 30], [30, 60], [90, 45]])) == pytest.approx(2.0)


def test_median_side_reads_every_row_not_the_first_ones(tmp_path):
    paths = []
    for i, side in enumerate([10] * 70 + [50] * 80):  # a sorted table: the first 64 rows are all small
        Image.new("RGB", (side, side + 5)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    assert median_side(header_sizes(paths)) == 50
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(PipelineError, match="none of the 1 training images"):
        header_sizes([tmp_path / "junk.png"])


def test_batches_are_full_shuffled_by_seed_and_epoch_and_sharded():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2)
    train = TensorBatches(images, np.arange(10), 4, shuffle=True, seed=3)
    first = [y.tolist() for _, y in train]
    assert len(first) == len(train) == 2 and all(len(b) == 4 for b in first)  # full batches only
    assert [y.tolist() for _, y in train] == first
    train.set_epoch(1)
    assert [y.tolist() for _, y in train] != first
    ordered = TensorBatches(images, None, 4, shuffle=False)
    assert [x[:, 0, 0, 0].tolist() for x, _ in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shards = [TensorBatches(images, np.arange(10), 5, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    rows = [y for shard in shards for _, y in shard]
    assert sorted(torch.cat(rows).tolist()) == list(range(10))


def test_augmentation_draws_exactly_the_kept_flips_and_turns(monkeypatch):
    """Without the random crop, the affine warp of each image is one element of the kept group, pixel for pixel;
    every element shows up, and nothing outside the group does."""
    monkeypatch.setattr(augment, "crop_params", lambda n, scale, ratio=None: torch.tensor([[1.0, 1, 0, 0]] * n))
    x = torch.randint(0, 255, (200, 3, 8, 8), dtype=torch.uint8)
    for symmetry in (Symmetry(0.5, 0.5, True), Symmetry(0.5, 0.5), Symmetry(0, 0.5), Symmetry(0, 0, True),
                     Symmetry()):
        torch.manual_seed(0)
        out, _ = BatchAugment((0, 0, 0), (1 / 255,) * 3, symmetry=symmetry)(x, None)
        seen = set()
        for i in range(len(x)):
            (match,) = [e for e, op in ELEMENTS.items() if (op(x[i]).float() - out[i]).abs().max() < 1e-3][:1]
            seen.add(match)
        assert seen == set(symmetry.group), symmetry


def test_augmentation_is_seeded_normalised_and_views_match_the_elements():
    x = torch.randint(0, 255, (6, 3, 16, 16), dtype=torch.uint8)
    aug = BatchAugment(MEAN, STD, symmetry=Symmetry(0.5, 0.5), auto_augment="rand", jitter=0.2)
    torch.manual_seed(1)
    a, _ = aug(x, None)
    torch.manual_seed(1)
    b, _ = aug(x, None)
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (6, 3, 16, 16)
    assert a.min() >= -1 - 1e-5 and a.max() <= 1 + 1e-5
    assert torch.allclose(View("hflip", MEAN, STD)(x), (x.flip(-1).float() / 255 - 0.5) / 0.5)
    with pytest.raises(PipelineError, match="auto-augment"):
        BatchAugment(MEAN, STD, symmetry=Symmetry(), auto_augment="bogus")
