"""House Prices (Kaggle's house-prices-advanced-regression-techniques): tabular regression on log-RMSE.

``pipeline.py`` loads, cross-validates the model zoo, stacks and writes a run; ``estimators.py`` holds the zoo
and its search spaces; ``mlp.py`` a torch MLP as a scikit-learn estimator; ``objective.py`` what
``tune house-prices`` runs. This file only registers the competition, and imports nothing heavy.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipelines.core.competition import BlendSpec, Competition
from pipelines.core.records import REPO_ROOT


def _spec(data_dir: str | None):
    from pipelines.competitions.house_prices.pipeline import ID, NAME, TARGET, load
    from submissions.writer import SubmissionSpec

    _, test = load(data_dir)
    return SubmissionSpec(NAME, [ID, TARGET], ids=test[ID], positive=True)


def _objective(args):
    from pipelines.competitions.house_prices.objective import HousePricesObjective

    return HousePricesObjective(args)


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated strong models to tune (default all)")


def _log_price(price: np.ndarray) -> np.ndarray:
    """The metric's space: log price, predictions clamped to >= 1 as the metric does (d2l)."""
    return np.log(np.clip(price, 1, None))


COMPETITION = Competition(
    name="house-prices",
    command="house-prices",
    help="House Prices: K-fold CV, then a validated submission",
    module="pipelines.competitions.house_prices.pipeline",
    kaggle_slug="house-prices-advanced-regression-techniques",
    metric="log_rmse",
    greater_is_better=False,
    default_data=REPO_ROOT / "data" / "house-prices",
    build_spec=_spec,
    make_objective=_objective,
    add_tune_arguments=_tune_arguments,
    blend=BlendSpec(id_column="Id", target="SalePrice", space="log price", to_space=_log_price,
                    from_space=np.exp),
    aliases=("house",),
)
