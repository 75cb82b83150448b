"""``features.house.GroupSlopes``: a slope per group, learned from the fitted rows only, in the preset's matrix."""

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

from features.house import GroupSlopes, make_preprocessor


def test_each_level_gets_its_own_standardised_column_and_an_unseen_level_none():
    fit = pd.DataFrame({"hood": ["a", "a", "b", "b"], "size": [1.0, 3.0, 5.0, 7.0]})
    slopes = GroupSlopes().fit(fit)
    out = slopes.transform(pd.DataFrame({"hood": ["a", "b", "zz"], "size": [3.0, 3.0, 100.0]}))
    assert list(out.columns) == ["size_x_hood_a", "size_x_hood_b"]
    z = (3.0 - 4.0) / np.std([1.0, 3.0, 5.0, 7.0])  # the fitted rows' mean and spread, not the transformed rows'
    np.testing.assert_allclose(out.to_numpy(), [[z, 0.0], [0.0, z], [0.0, 0.0]])


def test_a_linear_model_recovers_slopes_that_differ_by_group():
    """log price = level_g + slope_g * size: one-hot levels and one shared slope miss it, the slopes fit it."""
    rng = np.random.default_rng(0)
    group = rng.choice(["cheap", "dear"], size=400)
    size = rng.normal(size=400)
    y = np.where(group == "dear", 1.0 + 2.0 * size, 0.5 * size) + rng.normal(scale=0.05, size=400)
    frame = pd.DataFrame({"group": group, "size": size})
    base = np.column_stack([group == "dear", size]).astype(float)
    with_slopes = np.column_stack([base, GroupSlopes().fit_transform(frame)])
    r2 = [LinearRegression().fit(X, y).score(X, y) for X in (base, with_slopes)]
    assert r2[0] < 0.95 < 0.99 < r2[1]


def test_the_preset_matrix_has_a_size_slope_per_neighbourhood_only_when_it_can(house_copy):
    train = pd.read_csv(house_copy / "train.csv").drop(columns=["Id", "SalePrice"])
    names = list(make_preprocessor().fit(train).get_feature_names_out())
    hoods = sorted(train["Neighborhood"].unique())
    assert [n for n in names if "_x_" in n] == [f"TotalSF_x_Neighborhood_{h}" for h in hoods]
    without = make_preprocessor().fit(train.drop(columns=["Neighborhood"]))
    assert not [n for n in without.get_feature_names_out() if "_x_" in n]
