"""Flips and turns are decided from the training rows: kept where labels survive them, dropped where they do not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from features.images import decode_cache
from features.symmetry import ELEMENTS, GROUPS, Symmetry, decide
from pipelines.competitions.leaves.config import LeavesConfig
from pipelines.competitions.leaves.glyphgen import generate_glyphs
from pipelines.competitions.leaves.leafgen import generate_leaves
from pipelines.competitions.leaves.views import fold_symmetry, probe_features


def test_each_flag_expressible_group_round_trips():
    for group in GROUPS:
        assert Symmetry.from_group(group).group == group
    assert Symmetry(0.5, 0.5, True).group == tuple(ELEMENTS)  # quarter turns and a flip make the whole group


def clustered(n_per_class: int, swap: dict[str, dict[int, int]], seed: int = 0):
    """Features of 4 well-separated classes in each view; ``swap[view]`` maps a class to the class whose
    features that view shows (a flip that turns one class into another), other views look like the identity."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, 16))
    y = np.repeat(np.arange(4), n_per_class)
    noise = rng.normal(0, 1, (len(y), 16))
    feats = {}
    for view in ELEMENTS:
        shown = np.array([swap.get(view, {}).get(c, c) for c in y])
        feats[view] = centres[shown] + noise
    return feats, y


def test_a_view_that_swaps_classes_is_dropped_and_one_that_keeps_them_is_kept():
    swap_lr = {0: 1, 1: 0}  # like hflip on arrows: left <-> right
    feats, y = clustered(40, {"hflip": swap_lr, "rot180": swap_lr, "rot90": swap_lr, "rot270": swap_lr,
                              "transpose": swap_lr, "antitranspose": swap_lr})
    decision = decide(feats, y)
    assert not decision["tests"]["hflip"]["kept"] and decision["tests"]["hflip"]["delta"] < -0.2
    assert decision["tests"]["vflip"]["kept"]
    assert decision["group"] == ("identity", "vflip") and decision["symmetry"] == Symmetry(0.0, 0.5, False)


def test_a_view_that_keeps_labels_but_makes_images_the_rows_lack_is_dropped():
    """Like ELPV's cells, all with horizontal busbars: a quarter turn keeps the label but makes an upright-busbar
    cell no row has (its features shifted off the rows'); a flip makes the same cell again."""
    feats, y = clustered(40, {})
    for view in ("rot90", "rot270", "transpose", "antitranspose"):
        feats[view] = feats[view] + 1.5  # every image told apart from the rows, its class still where it was
    decision = decide(feats, y)
    turn, flip = decision["tests"]["rot90"], decision["tests"]["hflip"]
    assert turn["keeps_labels"] and turn["detected"] > 0.95 and not turn["kept"]
    assert flip["kept"] and flip["detected"] < 0.6
    assert decision["group"] == ("identity", "hflip", "vflip", "rot180")


def test_too_few_rows_show_nothing_so_nothing_is_kept():
    feats, y = clustered(1, {})  # one row per class: no class has a row in both halves
    decision = decide(feats, y)
    assert decision["group"] == ("identity",) and decision["tests"] == {}


def test_explicit_flags_win_over_the_probe():
    feats, y = clustered(40, {})  # every view keeps labels: the probe alone would keep the whole group
    from pipelines.competitions.leaves.views import ProbeFeatures

    probe = ProbeFeatures(np.arange(len(y)), feats, 0.0)
    rows = np.arange(len(y))
    auto, record = fold_symmetry(LeavesConfig(), probe, y, rows, 0)
    assert auto.group == tuple(ELEMENTS) and record["source"] == "probe"
    no_h, record = fold_symmetry(LeavesConfig(hflip="0"), probe, y, rows, 0)
    assert "hflip" not in no_h.group and no_h.rot90 and record["source"] == "probe and flags"
    given, record = fold_symmetry(LeavesConfig(hflip="0.3", vflip="0", rot90="off"), None, y, rows, 0)
    assert given == Symmetry(0.3, 0.0, False) and record == {"source": "flags"}


@pytest.fixture(scope="module")
def real_probe(tmp_path_factory):
    """The real probe (packaged efficientnet-lite0 features) on the two sets, once."""
    def run(root):
        table = pd.read_csv(root / "train.csv")
        images = decode_cache([root / p for p in table["image"]], 32)
        _, y = np.unique(table["label"], return_inverse=True)
        probe = probe_features(images, y, 0, "cpu")
        return decide(probe.features, y[probe.rows])

    glyphs = generate_glyphs(tmp_path_factory.mktemp("glyphs"), n_train=400, n_test=0, size=32, seed=0)
    leaves = generate_leaves(tmp_path_factory.mktemp("leaves"), n_species=10, n_train=300, n_test=1, size=32, seed=0)
    striped = generate_leaves(tmp_path_factory.mktemp("striped"), n_species=10, n_train=300, n_test=1, size=32, seed=0)
    for path in pd.read_csv(striped / "train.csv")["image"]:  # dark lines across, placed symmetrically top to bottom
        pixels = np.asarray(Image.open(striped / path)).copy()
        pixels[[8, 15, 16, 23]] = 30
        Image.fromarray(pixels).save(striped / path)
    return {"glyphs": run(glyphs), "leaves": run(leaves), "striped": run(striped)}


def test_arrows_letters_and_digits_keep_no_flip_nor_turn(real_probe):
    """Arrows, b/d/p/q and 6/9: every flip and turn makes one class another, so none may be trained on."""
    decision = real_probe["glyphs"]
    assert decision["group"] == ("identity",)
    assert all(not t["kept"] and t["delta"] < 0 for t in decision["tests"].values())


def test_the_synthetic_leaf_set_keeps_both_flips(real_probe):
    """Leaves drawn at any angle keep their species under every flip and turn."""
    decision = real_probe["leaves"]
    assert {"hflip", "vflip"} <= set(decision["group"])
    assert decision["symmetry"].hflip > 0 and (decision["symmetry"].vflip > 0 or decision["symmetry"].rot90)


def test_at_8_px_the_stride_16_map_sees_the_mirror_that_the_last_map_barely_sees(tmp_path):
    """At 8 px the last feature map pools b, d, p, q, 6, 9 and the arrows into blobs: its probe reads a quarter
    of 300 of them right, and training it with their mirrors costs it nothing it can measure, so the mirror would
    be kept (a dim glyph set kept it in one fold that way: CV 0.878). The stride-16 map, the probe's default,
    still holds where the strokes are: it reads most rows right and a mirror costs it a quarter of them."""
    import torch

    from features.symmetry import view_features
    from models import create_model, input_stats
    from pipelines.competitions.leaves.views import PROBE_MODEL, PROBE_SIDE

    root = generate_glyphs(tmp_path, n_train=300, n_test=0, size=8, seed=0)
    table = pd.read_csv(root / "train.csv")
    images = decode_cache([root / p for p in table["image"]], 32)
    _, y = np.unique(table["label"], return_inverse=True)
    with torch.random.fork_rng(devices=[]):
        model = create_model(PROBE_MODEL, 2, pretrained=True)
    mean, std = input_stats(model)
    mid, last = (decide(view_features(model, images, mean, std, side=PROBE_SIDE, level=level), y)["tests"]["hflip"]
                 for level in (3, None))
    assert mid["plain"] > last["plain"] + 0.3
    assert mid["delta"] < last["delta"] - 0.15 and not mid["kept"]


def test_leaves_crossed_by_horizontal_lines_keep_their_flips_and_lose_their_turns(real_probe):
    """Every row has its lines across, like ELPV's busbars: a turn stands them upright, which no row shows, so the
    turns are not trained on, while the flips (which keep the lines where they are) still are."""
    decision = real_probe["striped"]
    assert decision["group"] == ("identity", "hflip", "vflip", "rot180")
    for turn in ("rot90", "rot270", "transpose", "antitranspose"):
        assert decision["tests"][turn]["detected"] >= 0.9 and not decision["tests"][turn]["kept"]
    assert all(decision["tests"][flip]["detected"] < 0.9 for flip in ("hflip", "vflip", "rot180"))
