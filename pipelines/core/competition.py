"""What the toolkit needs to know about one competition, as one object (the way timm registers a model).

Each folder under ``pipelines/competitions/`` defines ``COMPETITION = Competition(...)`` in its
``__init__.py``; the registry (``pipelines.competitions``) finds them, and every generic command (tune,
blend, submit, runs, the CLI table) asks it instead of testing a competition's name. Adding a competition is
adding one folder. The callables are imported lazily by the competition, so listing the registry (e.g. for
``--help``) never pays for pandas, scikit-learn or torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.core.errors import PipelineError


class Objective(Protocol):
    """What ``tune`` runs: built from the command's flags; ``FixedTrial(best.params)`` reruns a trial."""

    direction: str  # "minimize" or "maximize", the competition's own direction
    setup: dict  # what makes two trials comparable (a study refuses another setup)

    def check_inputs(self, args: argparse.Namespace) -> None: ...  # the data and settings, before any study
    def defaults(self) -> dict: ...  # the preset's parameters in the search space's names: trial 0
    def __call__(self, trial: Any) -> float: ...  # one trial's CV
    def train_best(self, params: dict, extra_record: dict) -> dict: ...  # {"cv_mean", "submission"}


def identity(values: np.ndarray) -> np.ndarray:
    return values


@dataclass(frozen=True)
class BlendSpec:
    """How ``blend`` combines a competition's runs.

    ``kind="regression"``: their OOF and test columns, mapped into the space where the metric is an RMSE
    (house prices: log price), weighted there, mapped back. ``kind="probabilities"``: their out-of-fold and
    test class probabilities (the run's ``test_probs`` table), weighted by log-loss, the argmax submitted.
    """

    id_column: str
    target: str
    kind: str = "regression"
    space: str = "identity"  # its name, recorded with a blend
    to_space: Callable[[np.ndarray], np.ndarray] = identity
    from_space: Callable[[np.ndarray], np.ndarray] = identity
    # regression: the loss that a run's stack weights and a blend's weights minimise in that space (None: its
    # RMSE); the scores stay RMSE. House prices: a Huber loss, as its stack fits its own weights
    fit_loss: Callable[[np.ndarray, np.ndarray], float] | None = None
    fit_loss_name: str = "RMSE"  # what the blend's table says its weights minimise
    # regression: how a run's per-model OOF columns, its stack weights and its model names (``oof_<name>``)
    # make its prediction (None: the weighted mean). House prices: the weighted mean, then the extrapolation
    # guard, as its own stack does, so a blend rescores each run exactly as the run scored itself
    combine: Callable[[np.ndarray, np.ndarray, list[str]], np.ndarray] | None = None


@dataclass(frozen=True)
class Competition:
    """One competition: its names, metric, data, submission format, tuning objective and blending."""

    name: str  # the run records' ``competition`` and the folder under --out-dir
    command: str  # ``python -m pipelines <command>`` runs its pipeline
    help: str  # the command's one-line help
    module: str  # the pipeline module: ``add_arguments(parser)`` and ``run(args) -> int``
    kaggle_slug: str
    metric: str
    greater_is_better: bool
    default_data: Path  # the Kaggle-layout folder read when no --data-dir is given
    # data folder (None: the default) -> a ``submissions.writer.SubmissionSpec`` (not imported: submissions
    # sits above core), rebuilt from the competition's own files each time a file is validated
    build_spec: Callable[[str | None], Any]
    make_objective: Callable[[argparse.Namespace], Objective] | None = None  # None: not tunable
    # the flags ``tune <command>`` takes for this competition alone (e.g. leaves --epochs), added to its own
    # sub-parser beside the study's flags; the objective reads them from ``args``. None: the study's only
    add_tune_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    blend: BlendSpec | None = None  # None: runs cannot be blended (e.g. no saved test probabilities)
    aliases: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"

    def data_folder(self, data_dir: str | Path | None) -> Path:
        """The folder ``--data-dir`` names, or ``default_data`` when the flag was not given (``None``).

        An empty or blank path is refused, not read as "not given": ``--data-dir "$DIR"`` with ``DIR`` unset
        must not silently train on the shipped data, or build data inside the checkout.
        """
        if data_dir is None:
            return self.default_data
        if not str(data_dir).strip():
            raise PipelineError("--data-dir is empty: name a folder, or leave the flag out for the default data")
        return Path(data_dir)

    @property
    def blendable(self) -> bool:
        return self.blend is not None

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this competition answers to: its own, its command, its Kaggle slug, its aliases."""
        return (self.name, self.command, self.kaggle_slug, *self.aliases)
