"""scikit-learn's estimator contract (``parametrize_with_checks``) for every estimator and transformer of our own:
``clone``, ``get_params``/``set_params``, ``NotFittedError`` before ``fit``, the input checks (width, column
names, 1-D, empty, NaN, complex, sparse), pickling, idempotent fits. A check one of them cannot pass is listed
in ``EXPECTED_FAILED`` with the reason (the test then expects it to fail).

The meta-estimators (``SeedBag``, ``_OneThread``) and the MLP are checked on small, fast instances: the checks
fit each estimator dozens of times on toy data, and the contract does not depend on the models' sizes."""

import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from features.house import GroupSlopes, HouseFeatures, HouseImputer, OrdinalMapper, RangeClipper, SkewCorrector
from pipelines.competitions.house_prices.estimators import (
    STRONG_MODELS,
    HuberLasso,
    SeedBag,
    _OneThread,
    make_model,
    optional_installed,
)
from pipelines.competitions.house_prices.mlp import MLPRegressor

ESTIMATORS = [
    HouseImputer(),
    OrdinalMapper(),
    HouseFeatures(),
    SkewCorrector(),
    RangeClipper(),
    GroupSlopes(),
    HuberLasso(alpha=1e-3, rounds=2, max_iter=5_000),
    MLPRegressor(hidden=16, epochs=20, lr=1e-2, batch_size=64),
    SeedBag([DecisionTreeRegressor(max_features=0.5, random_state=seed) for seed in (0, 1)]),
    _OneThread(HistGradientBoostingRegressor(max_iter=10, random_state=0)),
]

# class name -> {check: why it cannot pass}
EXPECTED_FAILED: dict[str, dict[str, str]] = {}


def expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_contract(estimator, check):
    check(estimator)


# the optional models where installed (TabPFN also needs its local weights: never in the suite)
@pytest.mark.parametrize("name", [n for n in STRONG_MODELS if n != "tabpfn" and optional_installed(n)])
def test_every_zoo_model_clones_with_its_parameters(name):
    """``make_model`` (a ``SeedBag`` with ``seeds=N``, an ``_OneThread`` for HistGradientBoosting) clones as
    scikit-learn's model selection tools clone it."""
    model = make_model(name, seed=3, seeds=2)
    copy = clone(model)
    assert type(copy) is type(model) and copy is not model
    assert repr(copy.get_params()) == repr(model.get_params())
