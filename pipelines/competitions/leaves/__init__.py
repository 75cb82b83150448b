"""Classify Leaves (Kaggle's classify-leaves): image classification on accuracy.

``pipeline.py`` fine-tunes a backbone with K-fold CV and test-time augmentation; its steps have one file each:
``config.py`` (settings and flags), ``data.py`` (tables, image size, decoding), ``train.py`` (one fold),
``views.py`` (flips and turns per fold, the TTA choice), ``record.py`` (submission, figures, run record).
``leafgen.py`` draws the synthetic leaf set used when no data is present; ``objective.py`` is what ``tune
leaves`` runs. This file only registers the competition, and imports nothing heavy.
"""

from __future__ import annotations

import argparse

from pipelines.core.competition import BlendSpec, Competition
from pipelines.core.records import REPO_ROOT


def _spec(data_dir: str | None):
    from pipelines.competitions.leaves.data import read_table, submission_spec  # the pipeline's own checks

    folder = COMPETITION.data_folder(data_dir)
    train, test = read_table(folder / "train.csv", ["image", "label"]), read_table(folder / "test.csv", ["image"])
    return submission_spec(test, train["label"].dropna())


def _objective(args):
    from pipelines.competitions.leaves.objective import LeavesObjective

    return LeavesObjective(args)


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, help="epochs per fold (default 3, a short tuning budget)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="fix a LeavesConfig field for every trial, e.g. --set model=resnet18 (repeatable)")


COMPETITION = Competition(
    name="classify-leaves",
    command="leaves",
    help="Classify Leaves: fine-tune a backbone with K-fold CV and TTA",
    module="pipelines.competitions.leaves.pipeline",
    kaggle_slug="classify-leaves",
    metric="accuracy",
    greater_is_better=True,
    default_data=REPO_ROOT / "data" / "classify-leaves",
    build_spec=_spec,
    make_objective=_objective,
    add_tune_arguments=_tune_arguments,
    blend=BlendSpec(id_column="image", target="label", kind="probabilities", space="class probabilities"),
)
