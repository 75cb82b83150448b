"""``catboost_native``: CatBoost fitted on the feature frame before one-hot encoding, its text columns as
CatBoost's own categorical features."""

import numpy as np
import pandas as pd
import pytest

from pipelines.competitions.house_prices.estimators import FRAME_MODELS, make_model


def _frame(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    town = rng.choice(["north", "south", "east"], rows)
    size = rng.uniform(50, 200, rows)
    price = np.log(size) + pd.Series(town).map({"north": 1.0, "south": 0.0, "east": 0.5}).to_numpy()
    return pd.DataFrame({"size": size, "town": pd.array(town, dtype="str")}), price


def test_the_text_columns_are_catboosts_categorical_features_and_drive_its_predictions():
    X, y = _frame(300)
    model = make_model("catboost_native", seed=0, iterations=60, seeds=1).fit(X, y)
    assert "catboost_native" in FRAME_MODELS and model.categorical_ == ["town"]
    probe = pd.DataFrame({"size": [100.0] * 4, "town": pd.array(["north", "east", "south", "nowhere"], dtype="str")})
    north, east, south, unseen = model.predict(probe)
    assert north > east > south  # what the category says, learned without one-hot columns
    assert np.isfinite(unseen)  # a category the fit never saw still gets a price


def test_a_missing_category_is_its_own_level_and_a_matrix_is_refused():
    X, y = _frame(200, seed=1)
    X.loc[:9, "town"] = None
    model = make_model("catboost_native", seed=0, iterations=30, seeds=1).fit(X, y)
    assert np.isfinite(model.predict(X)).all()
    with pytest.raises(TypeError, match="feature frame"):
        make_model("catboost_native", seed=0, iterations=30, seeds=1).fit(X.to_numpy(), y)
