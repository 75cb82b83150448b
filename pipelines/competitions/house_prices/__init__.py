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
    from pipelines.competitions.house_prices.pipeline import load, submission_spec

    return submission_spec(load(data_dir)[1])


def _objective(args):
    from pipelines.competitions.house_prices.objective import HousePricesObjective

    return HousePricesObjective(args)


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated strong models to tune (default all)")


# the stack's (and a blend's) weights minimise a Huber loss with this threshold in log price (about a 10 % price
# error), not the squared error: on 3 x 5-fold all-rows CV (fold seeds 10-12) 0.11750 -> 0.11686, because squared
# error let the two rows that no model predicts (errors above 1.1) set the weights for every house
STACK_HUBER_DELTA = 0.1


def stack_loss(y: np.ndarray, pred: np.ndarray) -> float:
    """The Huber loss (``STACK_HUBER_DELTA``) that stack and blend weights minimise (scores stay RMSE)."""
    from pipelines.core.metrics import huber_loss

    return huber_loss(STACK_HUBER_DELTA)(y, pred)


def _stack(preds: np.ndarray, weights: np.ndarray, names: list[str]) -> np.ndarray:
    """A run's stack from its per-model log prices: the weighted mean, then the extrapolation guard."""
    from pipelines.competitions.house_prices.pipeline import bounded_models, guard

    return guard(preds, weights, bounded_models(names))[0]


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
                    from_space=np.exp, fit_loss=stack_loss,
                    fit_loss_name=f"Huber loss (delta {STACK_HUBER_DELTA})", combine=_stack),
    aliases=("house",),
)
