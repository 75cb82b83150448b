"""The leaves CLI with starting weights: the run record names them with their SHA-256, and a timm name with
no reachable weights stops with one line before any data loads or any run folder is made."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from models import create_model
from pipelines.__main__ import main
from pipelines.competitions.leaves.leafgen import generate_leaves

TINY = ["--epochs", "1", "--batch-size", "8", "--folds", "2", "--fold", "0", "--no-progress", "--img-size", "32",
        "--tta", "1"]


def test_record_names_the_weights_file_with_its_sha256(tmp_path, capsys):
    data = generate_leaves(tmp_path / "data", n_species=3, n_train=24, n_test=6, size=32, seed=1)
    torch.save(create_model("test_efficientnet", num_classes=1000).state_dict(), tmp_path / "w.pth")
    assert main(["leaves", "--model", "test_efficientnet", "--pretrained-file", str(tmp_path / "w.pth"),
                 "--data-dir", str(data), "--out-dir", str(tmp_path / "subs"), "--runs-dir", str(tmp_path / "runs"),
                 *TINY]) == 0
    sub = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("submission: "))
    weights = json.loads(sub.with_suffix(".json").read_text())["weights"]
    assert weights["kind"] == "file" and weights["source"] == str(tmp_path / "w.pth")
    assert weights["sha256"] == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()


def test_offline_timm_name_without_cached_weights_is_one_line(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert main(["leaves", "--model", "resnet18", "--data-dir", str(tmp_path / "nowhere"),
                 "--out-dir", str(tmp_path / "subs"), "--runs-dir", str(tmp_path / "runs"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: no pretrained weights for resnet18")
    assert "--pretrained-file" in err and "--no-pretrained" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "subs").exists()
