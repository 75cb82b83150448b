"""What a finished leaves run writes: the submission, the OOF and test-probability tables, the learning-curve
and confusion figures, and the run record (config, folds, scores, weights' origin, epoch and view choices),
through the shared writer.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.competitions.leaves import COMPETITION as LEAVES
from pipelines.competitions.leaves.config import ANNEAL_MIN_SHARE, COMPETITION, EPOCH_RANGE, LeavesConfig
from pipelines.competitions.leaves.data import submission_spec
from pipelines.core.records import RunRecord

if TYPE_CHECKING:
    from pipelines.competitions.leaves.data import LeafData
    from submissions.writer import RunFiles


def epoch_choice(cfg: LeavesConfig, epochs: int | None = None) -> str:
    """How the weights that score each fold were chosen (goes into the record)."""
    if cfg.patience > 0:
        return (f"early stopping (patience {cfg.patience}) on a stratified 10% inner split of the training folds; "
                "the scored fold never chose an epoch")
    if cfg.anneal_at:
        return (f"the last epoch (at most {epochs or cfg.epochs}: a fold ends early once its training accuracy "
                f"reaches {cfg.anneal_at:g}); the scored fold never chose an epoch")
    return f"fixed: the last of {epochs or cfg.epochs} epochs; the scored fold never chose an epoch"


def curves_figure(histories: dict[int, list[dict]], scores: dict[int, float]):
    """Training loss and accuracy per epoch (the inner split's or the tuner's per-epoch scores where they
    exist), and each fold's held-out accuracy, measured once at its last epoch, as a marker."""
    from pipelines.core.plots import pyplot

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for fold, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        (line,) = ax_loss.plot(epochs, [h["loss"] for h in hist], label=f"fold {fold} train")
        ax_acc.plot(epochs, [h.get("acc", np.nan) for h in hist], color=line.get_color(), label=f"fold {fold} train")
        for key, style in (("val_acc", "--"), ("stop_acc", ":")):
            if any(key in h for h in hist):
                ax_acc.plot(epochs, [h.get(key, np.nan) for h in hist], style, color=line.get_color(),
                            label=f"fold {fold} {'valid' if key == 'val_acc' else 'inner split'}")
        if fold in scores and epochs:
            ax_acc.plot([epochs[-1]], [scores[fold]], "o", color=line.get_color(), label=f"fold {fold} held out")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle("learning curves (train with augmentation/mixup; held-out fold with EMA weights, once)")
    fig.tight_layout()
    plt.close(fig)  # the writer saves it; pyplot need not keep it alive
    return fig


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]):
    from sklearn.metrics import confusion_matrix

    from pipelines.core.plots import pyplot

    plt = pyplot()
    cm = confusion_matrix(y_true, y_pred, labels=range(len(classes)))
    side = min(20, 3 + 0.4 * len(classes))
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if v > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("out-of-fold confusion matrix")
    fig.tight_layout()
    plt.close(fig)
    return fig


def write_leaves_run(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, result, fold_info: dict[int, dict],
                     tta: dict, *, weights: dict, device, run_dir: Path, started: float,
                     load_seconds: float) -> RunFiles:
    """The submission (argmax of the test probabilities), the OOF table with every class's probability, the
    test probabilities a blend needs, the record and the figures, through the shared writer."""
    from submissions.writer import write_run

    classes = np.asarray(data.classes)
    trained = np.isin(folds, sorted(fold_info))
    submission = pd.DataFrame({"image": data.test["image"], "label": classes[result.test.argmax(1)]})
    spec = submission_spec(data.test, data.classes)
    oof = pd.DataFrame({"image": data.train["image"], "fold": folds, "label": data.train["label"]})[trained]
    oof["pred"] = classes[result.oof[trained].argmax(1)]
    prob_columns = [f"p_{c}" for c in data.classes]
    probs = pd.DataFrame(result.oof[trained], columns=prob_columns, index=oof.index)
    oof = pd.concat([oof, probs], axis=1)
    # the test probabilities exactly as the submission's argmax reads them (fold mean, chosen TTA views): a blend
    # of several runs needs them (``python -m pipelines blend``)
    test_probs = pd.concat([data.test[["image"]].reset_index(drop=True),
                            pd.DataFrame(result.test, columns=prob_columns)], axis=1)
    record = leaves_record(cfg, data, folds, result, fold_info, tta, weights=weights, device=device,
                           run_dir=run_dir, timings={"load_s": load_seconds, "fold_s": result.fold_seconds,
                                                     "total_s": time.perf_counter() - started})
    scores = dict(zip(sorted(fold_info), result.fold_scores, strict=True))
    figures = {"curves": curves_figure({k: v["history"] for k, v in fold_info.items()}, scores),
               "confusion": confusion_figure(data.y[trained], result.oof[trained].argmax(1), data.classes)}
    return write_run(submission, spec, out_dir=cfg.out_dir, record=record, oof=oof, figures=figures,
                     tables={"test_probs": test_probs})


def leaves_record(cfg: LeavesConfig, data: LeafData, folds: np.ndarray, result, fold_info: dict[int, dict],
                  tta: dict, *, weights: dict, device, run_dir: Path, timings: dict) -> RunRecord:
    """The run record: config, seed, fold ids, scores, the starting weights, the epoch and view choices."""
    from pipelines.core.distributed import world

    extra = {
        "weights": weights,  # where the starting weights came from, with their SHA-256
        "data": {"dir": str(data.root), "source": data.source, "n_train": len(data.train),
                 "n_test": len(data.test), "img_size": data.img_size, "img_size_rule": data.size_rule,
                 "framing": data.framing, "framing_rule": data.framing_rule, "pixel_range": list(data.pixel_range),
                 "stretched": data.stretched, "stretch_rule": data.stretch_rule},
        "symmetry": {str(k): {**v["symmetry_record"], "hflip": v["symmetry"].hflip, "vflip": v["symmetry"].vflip,
                              "rot90": v["symmetry"].rot90} for k, v in fold_info.items()},
        "schedule": {"epochs": {k: v["epochs"] for k, v in fold_info.items()},
                     "rule": "--epochs" if cfg.epochs else f"auto: about {cfg.steps} optimizer steps per fold within "
                                                           f"{EPOCH_RANGE[0]}..{EPOCH_RANGE[1]} epochs (more where "
                                                           f"{ANNEAL_MIN_SHARE:.0%} of those steps need them)",
                     "passes_per_image": {k: v["epochs"] for k, v in fold_info.items()},
                     "planned": {k: v["epochs_planned"] for k, v in fold_info.items()},
                     # a fold whose training accuracy reached anneal_at after this epoch decayed and ended early
                     "anneal_at": cfg.anneal_at or None,
                     "annealed_after": {k: v["annealed_after"] for k, v in fold_info.items()}},
        "classes": data.classes,
        "trained_folds": sorted(fold_info),
        "epoch_choice": epoch_choice(cfg, max(v["epochs_planned"] for v in fold_info.values())),
        "fold_epochs_used": {k: v["epoch_used"] for k, v in fold_info.items()},
        "tta": {"views_tried": tta["views_tried"], "oof_accuracy_by_views": tta["oof_accuracy"],
                "views_per_fold": tta["per_fold"], "views_test": tta["test"],
                "rule": "views are the identity then the fold's kept flips and turns; each fold's rows use the "
                        "view count best on the other folds' rows; test: best on all"},
        "history": {k: v["history"] for k, v in fold_info.items()},
        "device": str(device),
        "world_size": world()[1],
        "fold_threads": {k: v["threads"] for k, v in fold_info.items()},  # --fold-jobs: a process per fold
        "run_dir": str(run_dir),
        **cfg.extra_record,
    }
    return RunRecord(
        competition=COMPETITION, preset=cfg.model, cv_mean=result.mean, metric=LEAVES.metric, cv_std=result.std,
        fold_scores=result.fold_scores, seed=cfg.seed, config=dataclasses.asdict(cfg), data_dir=str(data.root),
        folds={"strategy": "stratified", "n_splits": cfg.folds, "ids": folds}, kaggle_competition=LEAVES.kaggle_slug,
        timings=timings, extra=extra,
    )
