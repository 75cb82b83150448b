"""Is the synthetic leaf task genuinely visual? A linear model on raw pixels against the fine-tuned CNN.

Generates the default synthetic set (``pipelines.competitions.leaves.leafgen``), fits a logistic regression on the raw
pixels (at the native 96 px; ``--linear-size`` downsamples) and scores it on the hidden test
labels; then runs the default leaves pipeline on the same folder and scores its submission the same way.
The issue's bar: linear well under 60 %, CNN over 95 %.

    .venv/bin/python benchmarks/leaves_separability.py            # both figures (CNN: the make leaves run)
    .venv/bin/python benchmarks/leaves_separability.py --linear-only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def pixels(root: Path, names, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / n).convert("RGB").resize((size, size)), np.float32).ravel() / 255
                     for n in names])


def linear_accuracy(root: Path, size: int = 48) -> float:
    """Logistic regression on standardised raw pixels; accuracy on ``test_labels.csv``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = pd.read_csv(root / "train.csv"), pd.read_csv(root / "test_labels.csv")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))
    clf.fit(pixels(root, train["image"], size), train["label"])
    return float(np.mean(clf.predict(pixels(root, test["image"], size)) == test["label"]))


def cnn_accuracy(root: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """The default leaves pipeline on ``root``: (CV accuracy, hidden-test accuracy of its submission)."""
    import json

    from pipelines.__main__ import main

    before = set(out.glob("classify-leaves/*.csv"))
    assert main(["leaves", "--data-dir", str(root), "--out-dir", str(out), "--runs-dir", str(out / "runs"),
                 "--no-progress", *extra]) == 0
    (sub_path,) = [p for p in set(out.glob("classify-leaves/*.csv")) - before if not p.name.endswith("_oof.csv")]
    sub, truth = pd.read_csv(sub_path), pd.read_csv(root / "test_labels.csv")
    cv = json.loads(sub_path.with_suffix(".json").read_text())["cv_mean"]
    return cv, float(np.mean(sub["label"].to_numpy() == truth["label"].to_numpy()))


def main() -> None:
    from pipelines.competitions.leaves.config import LeavesConfig
    from pipelines.competitions.leaves.leafgen import generate_leaves

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--linear-only", action="store_true")
    p.add_argument("--linear-size", type=int, default=96, help="pixels per side fed to the linear model")
    args, extra = p.parse_known_args()
    d = LeavesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_leaves(Path(tmp) / "leaves", n_species=d.synthetic_species, n_train=d.synthetic_train,
                               n_test=d.synthetic_test, size=d.synthetic_size, seed=d.seed)
        start = time.perf_counter()
        lin = linear_accuracy(root, args.linear_size)
        print(f"linear model on raw pixels ({args.linear_size}px): test accuracy {lin:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        if not args.linear_only:
            start = time.perf_counter()
            cv, test = cnn_accuracy(root, Path(tmp) / "out", extra)
            print(f"fine-tuned CNN (default leaves run): cv accuracy {cv:.3f}, test accuracy {test:.3f} "
                  f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
