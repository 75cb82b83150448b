"""Does the house-prices CV predict what the submission scores on houses it has never seen? A nested check.

The 1460 training rows are split into outer folds (the headline's own splitter, fold seed 0). On each outer
training part the pipeline runs exactly as a user runs it (``python -m pipelines house-prices``, in-process),
on its own ``train.csv``, with the outer held-out rows as ``test.csv``; its submission is then scored on
those rows' real prices. Each arm is one set of command-line flags, so two ways to make the test predictions
(e.g. the refit on every row against ``--repeats 5 --test-pred average``) are compared on the same rows.
About 3 minutes per default arm on 2 idle cores.

    .venv/bin/python benchmarks/house_nested.py                                   # the default preset
    .venv/bin/python benchmarks/house_nested.py --arms "" "--repeats 5 --test-pred average"
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.__main__ import main as cli
from pipelines.competitions.house_prices.pipeline import ID, TARGET, load, outlier_mask
from pipelines.core.cv import make_folds
from pipelines.core.records import RunRecord


def run_arm(flags: str, train: pd.DataFrame, folds: np.ndarray, work: Path) -> dict:
    """Each outer fold's held-out log-RMSE of the submission the pipeline writes with ``flags``."""
    scores, normal, inner, seconds, errors = [], [], [], [], []
    for k in np.unique(folds):
        data = work / f"fold{k}"
        data.mkdir(parents=True, exist_ok=True)
        held = train[folds == k]
        train[folds != k].to_csv(data / "train.csv", index=False)
        held.drop(columns=[TARGET]).to_csv(data / "test.csv", index=False)
        out = tempfile.mkdtemp(prefix="runs-", dir=work)  # a fresh folder per run
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = cli(["house-prices", "--data-dir", str(data), "--out-dir", out, "--no-progress",
                        *shlex.split(flags)])
        if code:
            raise SystemExit(f"arm {flags!r}, fold {k}: the pipeline exited {code}")
        seconds.append(time.perf_counter() - start)
        submission = Path(printed.getvalue().splitlines()[-1].removeprefix("submission: "))  # its last line
        sub = pd.read_csv(submission)
        err = np.log(sub.set_index(ID).loc[held[ID], TARGET].to_numpy()) - np.log(held[TARGET].to_numpy())
        out_rows = outlier_mask(held)
        scores.append(float(np.sqrt(np.mean(err**2))))
        normal.append(err[~out_rows])
        errors.append(err)
        inner.append(RunRecord.read(submission.with_suffix(".json")).cv_mean)  # the run's record beside it
    every = np.concatenate(errors)
    return {"flags": flags, "fold_scores": scores, "mean": float(np.mean(scores)),
            "pooled": float(np.sqrt(np.mean(every**2))),
            "pooled_without_outliers": float(np.sqrt(np.mean(np.concatenate(normal) ** 2))),
            "inner_cv": inner, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=[""], help="one string of house-prices flags per arm")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="outer fold seed")
    args = parser.parse_args(argv)
    train, _ = load(None)
    folds = make_folds(np.log(train[TARGET].to_numpy()), args.folds, "binned", args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for flags in args.arms:
            r = run_arm(flags, train, folds, Path(tmp))
            print(f"arm {flags or '(defaults)'!r}: held-out log-RMSE per outer fold "
                  f"{' '.join(f'{s:.5f}' for s in r['fold_scores'])}; mean {r['mean']:.5f}, pooled {r['pooled']:.5f} "
                  f"(outliers unscored {r['pooled_without_outliers']:.5f}); the inner runs' own CV "
                  f"{' '.join(f'{s:.5f}' for s in r['inner_cv'])}; {np.mean(r['seconds']):.0f} s per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
