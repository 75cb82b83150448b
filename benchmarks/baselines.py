"""What is a pretrained backbone worth? Every classic ``models/`` baseline, trained from scratch on the
default synthetic leaf set with one short, equal budget, next to the pipeline's pretrained default.

Each model goes through the real CLI (``python -m pipelines leaves --model NAME ...``, called in-process
so the imports are paid once) with the same flags, on fold 0 of 3; the numbers come from the run
record it writes. Writes ``docs/baselines.md``. ``--epochs``/``--img-size``/``--models`` shrink it for a
quick look; the defaults are the published table (about 10 minutes on 2 idle cores).

    .venv/bin/python benchmarks/baselines.py [--epochs 2] [--img-size 72] [--models lenet,gru_classifier]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

import models
from pipelines.__main__ import main as cli
from pipelines.competitions.leaves.config import LeavesConfig
from pipelines.competitions.leaves.leafgen import VERSION, generate_leaves
from pipelines.core.records import REPO_ROOT

PRETRAINED_DEFAULT = LeavesConfig().model
# the same for every model: one fold, no augmentation beyond the pipeline's resize/flip/normalise, no
# mixing and no EMA (both need more steps than a short budget has); everything else is the default
SHARED_FLAGS = ["--fold", "0", "--tta", "1", "--patience", "0", "--auto-augment", "none", "--mix-prob", "0",
                "--ema-decay", "0", "--no-progress"]


class _Tee(io.TextIOBase):
    """Echo the pipeline's output while keeping it, to find the run record it announces."""

    def __init__(self):
        self.text = io.StringIO()

    def write(self, s: str) -> int:
        sys.__stdout__.write(s)
        return self.text.write(s)


def default_synthetic_set() -> Path:
    """The leaf set a plain ``python -m pipelines leaves`` generates, built here explicitly so that real
    data in ``data/classify-leaves/`` never changes the benchmark."""
    d = LeavesConfig()
    n = (d.synthetic_species, d.synthetic_train, d.synthetic_test, d.synthetic_size)
    root = REPO_ROOT / "cache" / "synthetic-leaves" / f"baselines_v{VERSION}_s{n[0]}_n{n[1]}_t{n[2]}_px{n[3]}_seed0"
    if not (root / ".complete").exists():
        generate_leaves(root, n_species=d.synthetic_species, n_train=d.synthetic_train, n_test=d.synthetic_test,
                        size=d.synthetic_size, seed=0)
        (root / ".complete").touch()
    return root


def train_one(name: str, data_dir: Path, out: Path, epochs: int, img_size: int, pretrained: bool) -> dict:
    argv = ["leaves", "--model", name, "--data-dir", str(data_dir), "--epochs", str(epochs),
            "--img-size", str(img_size), "--out-dir", str(out / "out"), "--runs-dir", str(out / "runs"),
            *SHARED_FLAGS, *([] if pretrained else ["--no-pretrained"])]
    tee = _Tee()
    start = time.perf_counter()
    with contextlib.redirect_stdout(tee):
        status = cli(argv)
    wall = time.perf_counter() - start
    if status != 0:
        return {"error": f"exit status {status}"}
    line = next(s for s in tee.text.getvalue().splitlines() if s.startswith("submission: "))
    record = json.loads(Path(line.removeprefix("submission: ")).with_suffix(".json").read_text())
    history = next(iter(record["history"].values()))
    return {
        "val_acc": record["fold_scores"][0],
        "s_per_epoch": sum(h["seconds"] for h in history) / len(history),
        "wall_s": wall,
    }


def n_params(name: str, num_classes: int) -> int:
    return sum(p.numel() for p in models.create_model(name, num_classes=num_classes, in_chans=3).parameters())


def write_table(rows: list[dict], args: argparse.Namespace, path: Path, load: tuple[float, float]) -> None:
    d = LeavesConfig()
    lines = [
        "# Classic baselines on the synthetic leaf set",
        "",
        f"Written by `benchmarks/baselines.py` on {datetime.now(UTC):%Y-%m-%d}. Every row is",
        f"`python -m pipelines leaves --model NAME --epochs {args.epochs} --img-size {args.img_size} "
        f"{' '.join(SHARED_FLAGS)}`",
        f"on the default synthetic set ({d.synthetic_species} species, {d.synthetic_train} train / "
        f"{d.synthetic_test} test images at {d.synthetic_size} px, seed 0), fold 0 of {d.folds}",
        f"(about {d.synthetic_train - d.synthetic_train // d.folds} train / {d.synthetic_train // d.folds} validation "
        "images). The classic models start from scratch (`--no-pretrained`);",
        "the first row is the pipeline's default backbone with its offline ImageNet weights. Optimiser and",
        "schedule are the pipeline's defaults (AdamW, lr 1e-3, one warmup epoch then cosine, label smoothing 0.1).",
        "",
        "Seconds per epoch are wall-clock training seconds (validation excluded; they include the data",
        f"pipeline) with {torch.get_num_threads()} torch threads on {platform.machine()}, {os.cpu_count()} cores;",
        f"the 1-minute load average was {load[0]:.1f} at the start and {load[1]:.1f} at the end",
        "(other jobs shared the machine, so compare the times with each other, not across machines).",
        "Validation accuracy is that of the last epoch's weights (`--patience 0`: no epoch is chosen on the",
        "scored fold), as the pipeline reports it; chance is 0.10. The pretrained row also runs the pipeline's",
        "other defaults (early layers frozen, flips and turns decided by the symmetry probe).",
        "",
        "| model | from | parameters | s / epoch | val. accuracy |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['model']}` | {r['from']} | {r['params']:,} | - | failed: {r['error']} |")
        else:
            lines.append(f"| `{r['model']}` | {r['from']} | {r['params']:,} | {r['s_per_epoch']:.1f} | "
                         f"{r['val_acc']:.3f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=72, help="at least 67: AlexNet and NiN need it")
    parser.add_argument("--models", help="comma-separated subset (default: every classic model + the default)")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "baselines.md"))
    args = parser.parse_args(argv)
    n_classes = LeavesConfig().synthetic_species
    # the pretrained default first (the row every other one is read against), then the ladder by size
    classic = sorted(models.list_models(module=("cnn", "rnn")), key=lambda n: n_params(n, n_classes))
    names = args.models.split(",") if args.models else [PRETRAINED_DEFAULT, *classic]
    data_dir = default_synthetic_set()
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            pretrained = name == PRETRAINED_DEFAULT
            row = {"model": name, "from": "ImageNet" if pretrained else "scratch", "params": n_params(name, n_classes)}
            row.update(train_one(name, data_dir, Path(tmp) / name, args.epochs, args.img_size, pretrained))
            print(f"== {row}", file=sys.stderr, flush=True)
            rows.append(row)
            write_table(rows, args, Path(args.out), (load_start, os.getloadavg()[0]))  # partial tables survive
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
