"""House Prices feature steps as scikit-learn transformers (fit on training rows only).

Each step takes and returns a DataFrame, learns its state in trailing-underscore attributes and
names its output columns, so it drops into any ``Pipeline``/``ColumnTransformer`` and CV never lets
a validation or test row shape what was learned. They keep scikit-learn's estimator contract
(``tests/pipelines/test_sklearn_contract.py``): an array in is read as columns ``x0, x1, ...`` and comes out
an array, and ``transform`` refuses columns other than those seen at fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, RobustScaler
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

# The Kaggle schema's numeric columns (data_description.txt); everything else is categorical.
NUMERIC_COLUMNS = (
    "MSSubClass LotFrontage LotArea OverallQual OverallCond YearBuilt YearRemodAdd MasVnrArea BsmtFinSF1 "
    "BsmtFinSF2 BsmtUnfSF TotalBsmtSF 1stFlrSF 2ndFlrSF LowQualFinSF GrLivArea BsmtFullBath BsmtHalfBath "
    "FullBath HalfBath BedroomAbvGr KitchenAbvGr TotRmsAbvGrd Fireplaces GarageYrBlt GarageCars GarageArea "
    "WoodDeckSF OpenPorchSF EnclosedPorch 3SsnPorch ScreenPorch PoolArea MiscVal MoSold YrSold"
).split()
# The schema's text columns. A column in neither list is not the schema's: its kind comes from its values
# (``is_numeric_column``), as ``select_dtypes("number")`` would decide it.
CATEGORICAL_COLUMNS = (
    "MSZoning Street Alley LotShape LandContour Utilities LotConfig LandSlope Neighborhood Condition1 Condition2 "
    "BldgType HouseStyle RoofStyle RoofMatl Exterior1st Exterior2nd MasVnrType ExterQual ExterCond Foundation "
    "BsmtQual BsmtCond BsmtExposure BsmtFinType1 BsmtFinType2 Heating HeatingQC CentralAir Electrical KitchenQual "
    "Functional FireplaceQu GarageType GarageFinish GarageQual GarageCond PavedDrive PoolQC Fence MiscFeature "
    "SaleType SaleCondition"
).split()
# NaN here means "the house has none" (data_description.txt), not "unknown".
ABSENT_CATEGORY = (
    "Alley BsmtQual BsmtCond BsmtExposure BsmtFinType1 BsmtFinType2 FireplaceQu GarageType GarageFinish "
    "GarageQual GarageCond PoolQC Fence MiscFeature MasVnrType"
).split()
ABSENT_ZERO = (
    "MasVnrArea BsmtFinSF1 BsmtFinSF2 BsmtUnfSF TotalBsmtSF BsmtFullBath BsmtHalfBath GarageCars GarageArea"
).split()
# Numeric codes that are really categories.
AS_CATEGORY = ("MSSubClass", "MoSold", "YrSold")

_QUALITY = {"None": 0, "Po": 1, "Fa": 2, "TA": 3, "Gd": 4, "Ex": 5}
ORDINAL_MAPS: dict[str, dict[str, int]] = {
    **{c: _QUALITY for c in (
        "ExterQual ExterCond BsmtQual BsmtCond HeatingQC KitchenQual FireplaceQu GarageQual GarageCond PoolQC"
    ).split()},
    "BsmtExposure": {"None": 0, "No": 1, "Mn": 2, "Av": 3, "Gd": 4},
    **{c: {"None": 0, "Unf": 1, "LwQ": 2, "Rec": 3, "BLQ": 4, "ALQ": 5, "GLQ": 6}
       for c in ("BsmtFinType1", "BsmtFinType2")},
    "GarageFinish": {"None": 0, "Unf": 1, "RFn": 2, "Fin": 3},
    "Functional": {"Sal": 0, "Sev": 1, "Maj2": 2, "Maj1": 3, "Mod": 4, "Min2": 5, "Min1": 6, "Typ": 7},
    "LandSlope": {"Sev": 0, "Mod": 1, "Gtl": 2},
    "LotShape": {"IR3": 0, "IR2": 1, "IR1": 2, "Reg": 3},
    "PavedDrive": {"N": 0, "P": 1, "Y": 2},
    "CentralAir": {"N": 0, "Y": 1},
    "Street": {"Grvl": 0, "Pave": 1},
}


# Each engineered feature (``HouseFeatures``) and the raw columns it is made of: a feature whose columns are not
# all in the data is skipped (not computed from zeros), and the run says which (``skipped_features``)
ENGINEERED_FROM: dict[str, tuple[str, ...]] = {
    "TotalSF": ("TotalBsmtSF", "1stFlrSF", "2ndFlrSF"),
    "TotalBath": ("FullBath", "HalfBath", "BsmtFullBath", "BsmtHalfBath"),
    "TotalPorch": ("OpenPorchSF", "EnclosedPorch", "3SsnPorch", "ScreenPorch", "WoodDeckSF"),
    "HouseAge": ("YrSold", "YearBuilt"),
    "RemodAge": ("YrSold", "YearRemodAdd"),
    "Remodeled": ("YearRemodAdd", "YearBuilt"),
    "QualSF": ("OverallQual", "GrLivArea"),
    "QualTotalSF": ("OverallQual", "TotalBsmtSF", "1stFlrSF", "2ndFlrSF"),
    "HasPool": ("PoolArea",),
    "Has2ndFloor": ("2ndFlrSF",),
    "HasGarage": ("GarageArea",),
    "HasBsmt": ("TotalBsmtSF",),
    "HasFireplace": ("Fireplaces",),
}


def is_numeric_column(name: str, values: pd.Series) -> bool:
    """Whether ``name`` is a numeric feature: the schema says so for its own columns (``MSSubClass`` stays a
    numeric code here, ``AS_CATEGORY`` turns it into text later); any other column is numeric when its values
    are, as ``select_dtypes("number")`` decides (bool is not). An unknown float column is therefore scaled,
    not one-hot encoded into a category per distinct value."""
    if name in NUMERIC_COLUMNS or name in CATEGORICAL_COLUMNS:
        return name in NUMERIC_COLUMNS
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def skipped_features(columns) -> dict[str, list[str]]:
    """The engineered features that ``columns`` cannot make: feature -> the raw columns it lacks."""
    have = set(columns)
    return {name: [c for c in needs if c not in have] for name, needs in ENGINEERED_FROM.items()
            if not set(needs) <= have}


class _FrameTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Base: DataFrame in, DataFrame out, every input column kept in its place (``HouseFeatures`` appends its
    own after them); a subclass fits ``_fit`` and transforms in ``_transform``, on a DataFrame.

    ``fit`` remembers the input's width and column names (``n_features_in_``, ``feature_names_in_``) and
    ``transform`` refuses any other, as scikit-learn's own transformers do. An array (no column names) is read
    as columns ``x0, x1, ...`` and comes out an array. NaN and text pass through every step."""

    def fit(self, X, y=None):
        self._fit(self._frame(X, reset=True))
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._transform(self._frame(X, reset=False))
        return out if isinstance(X, pd.DataFrame) else out.to_numpy()

    def _frame(self, X, reset: bool) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):  # two dimensions, rows and columns, dense, not complex
            X = check_array(X, dtype=None, ensure_all_finite=False)
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])

    def _fit(self, X: pd.DataFrame) -> None:
        raise NotImplementedError

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = tags.input_tags.string = True
        return tags


class HouseImputer(_FrameTransformer):
    """Domain imputation: absence → ``"None"``/0, LotFrontage by neighborhood median, else mode/median.

    Medians and modes are learned from the rows passed to ``fit`` only.
    """

    def _fit(self, X: pd.DataFrame) -> None:
        X = self._base(X)
        self.lot_by_hood_ = X.groupby("Neighborhood")["LotFrontage"].median().dropna().to_dict() \
            if {"Neighborhood", "LotFrontage"} <= set(X.columns) else {}
        numeric = [c for c in X.columns if c not in AS_CATEGORY and is_numeric_column(c, X[c])]
        self.medians_ = {c: (float(X[c].median()) if X[c].notna().any() else 0.0) for c in numeric}
        categorical = [c for c in X.columns if c not in self.medians_]
        self.modes_ = {c: (X[c].mode().iloc[0] if X[c].notna().any() else "None") for c in categorical}

    @staticmethod
    def _base(X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        absent = [c for c in ABSENT_CATEGORY if c in X]  # whole blocks at once: a column at a time costs 10x
        X[absent] = X[absent].astype("object").fillna("None")
        zero = [c for c in ABSENT_ZERO if c in X]
        X[zero] = X[zero].fillna(0)
        if "GarageYrBlt" in X and "YearBuilt" in X:  # no garage: pretend it is as old as the house
            X["GarageYrBlt"] = X["GarageYrBlt"].fillna(X["YearBuilt"])
        if "Functional" in X:
            X["Functional"] = X["Functional"].fillna("Typ")  # data_description: assume typical
        for c in AS_CATEGORY:
            if c in X:
                X[c] = X[c].map(lambda v: "None" if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
        return X

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._base(X)
        if "LotFrontage" in X and "Neighborhood" in X:
            X["LotFrontage"] = X["LotFrontage"].fillna(X["Neighborhood"].map(self.lot_by_hood_))
        numeric = [c for c in self.medians_ if c in X]
        X[numeric] = X[numeric].apply(pd.to_numeric).fillna(self.medians_).astype(float)
        text = [c for c in self.modes_ if c in X]
        X[text] = X[text].astype("object").fillna(self.modes_).astype(str)
        return X


class OrdinalMapper(_FrameTransformer):
    """Map quality-like categories (Po < Fa < TA < Gd < Ex ...) to integers; unknown levels → NaN → 0."""

    def _fit(self, X: pd.DataFrame) -> None:
        self.columns_ = [c for c in ORDINAL_MAPS if c in X.columns]

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        for c in self.columns_:
            X[c] = X[c].map(ORDINAL_MAPS[c]).fillna(0).astype(float)
        return X


def _col(X: pd.DataFrame, name: str) -> pd.Series:
    return X[name].astype(float) if name in X else pd.Series(0.0, index=X.index)


class HouseFeatures(_FrameTransformer):
    """Engineered features a top kernel adds: total area, ages, bath and porch totals, indicators.

    A feature whose raw columns (``ENGINEERED_FROM``) are not all in the fitted data is skipped: the rest of
    it would be made of zeros, and a model would learn from a fake total.
    """

    def _fit(self, X: pd.DataFrame) -> None:
        self.skipped_ = skipped_features(X.columns)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = super().get_feature_names_out(input_features)  # the input's, checked
        added = [name for name in ENGINEERED_FROM if name not in self.skipped_]  # in ``_transform``'s order
        return np.asarray([*names, *added], dtype=object)

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        c = lambda name: _col(X, name)  # noqa: E731
        year_sold = pd.to_numeric(X["YrSold"], errors="coerce") if "YrSold" in X else c("YearBuilt")
        new = {
            "TotalSF": c("TotalBsmtSF") + c("1stFlrSF") + c("2ndFlrSF"),
            "TotalBath": c("FullBath") + 0.5 * c("HalfBath") + c("BsmtFullBath") + 0.5 * c("BsmtHalfBath"),
            "TotalPorch": c("OpenPorchSF") + c("EnclosedPorch") + c("3SsnPorch") + c("ScreenPorch")
            + c("WoodDeckSF"),
            "HouseAge": (year_sold - c("YearBuilt")).clip(lower=0),
            "RemodAge": (year_sold - c("YearRemodAdd")).clip(lower=0),
            "Remodeled": (c("YearRemodAdd") != c("YearBuilt")).astype(float),
            "QualSF": c("OverallQual") * c("GrLivArea"),
            "QualTotalSF": c("OverallQual") * (c("TotalBsmtSF") + c("1stFlrSF") + c("2ndFlrSF")),
            "HasPool": (c("PoolArea") > 0).astype(float),
            "Has2ndFloor": (c("2ndFlrSF") > 0).astype(float),
            "HasGarage": (c("GarageArea") > 0).astype(float),
            "HasBsmt": (c("TotalBsmtSF") > 0).astype(float),
            "HasFireplace": (c("Fireplaces") > 0).astype(float),
        }
        new = {name: values for name, values in new.items() if name not in self.skipped_}
        return pd.concat([X, pd.DataFrame(new, index=X.index).fillna(0.0)], axis=1)


class SkewCorrector(_FrameTransformer):
    """``log1p`` the non-negative numeric columns whose training skew exceeds ``threshold``."""

    def __init__(self, threshold: float = 0.75):
        self.threshold = threshold

    def _fit(self, X: pd.DataFrame) -> None:
        numeric = X.select_dtypes("number")
        skew = numeric.skew().abs()
        self.columns_ = [c for c in numeric if skew.get(c, 0) > self.threshold and numeric[c].min() >= 0]

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        X[self.columns_] = np.log1p(X[self.columns_].clip(lower=0))
        return X


class RangeClipper(_FrameTransformer):
    """Clip every numeric column to the range it had in the rows passed to ``fit``.

    Trees cannot extrapolate and are unaffected (no split lies outside the training range); linear,
    kernel, k-NN and MLP models would extrapolate a house far outside the training range (a 20,000 sq ft
    mansion) linearly in log price, so they see it as the largest house they were fitted on instead.
    """

    def _fit(self, X: pd.DataFrame) -> None:
        numeric = X.select_dtypes("number")
        self.lower_, self.upper_ = numeric.min().to_dict(), numeric.max().to_dict()

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        columns = [c for c in self.lower_ if c in X]
        bound = lambda b: pd.Series({c: b[c] for c in columns}, dtype=float)  # noqa: E731
        X[columns] = X[columns].clip(lower=bound(self.lower_), upper=bound(self.upper_), axis=1)
        return X


class GroupSlopes(_FrameTransformer):
    """A slope per group: the first column's levels one-hot, each times every other column standardised.

    A linear model on one-hot neighbourhoods shifts each neighbourhood's log price by a constant; with
    ``Neighborhood`` and ``TotalSF`` it also gets a price per log square foot of its own, the one interaction a
    buyer prices first (size is worth more where land is dear). Trees find such interactions themselves; on the
    3 x 5 choice folds ``huber_lasso`` alone went from 0.1218 to 0.1179 with it, the preset's stack from 0.1156 to
    0.1134 (docs/house-prices.md). Levels and the mean and spread come from the rows passed to ``fit``; a level
    unseen there gets no slope (all its columns 0), like ``OneHotEncoder(handle_unknown="ignore")``.
    """

    def _fit(self, X: pd.DataFrame) -> None:
        if X.shape[1] < 2:
            raise ValueError(f"GroupSlopes needs a group column and a value column: got {X.shape[1]} feature(s)")
        values = X.iloc[:, 1:].astype(float)
        self.levels_ = np.unique(_text(X.iloc[:, 0]))
        spread = values.std(ddof=0).to_numpy()
        self.mean_, self.scale_ = values.mean().to_numpy(), np.where(spread > 0, spread, 1.0)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        group, *values = super().get_feature_names_out(input_features)  # the input's, checked
        return np.asarray([f"{v}_x_{group}_{level}" for v in values for level in self.levels_], dtype=object)

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        z = (X.iloc[:, 1:].astype(float).to_numpy() - self.mean_) / self.scale_
        member = _text(X.iloc[:, 0])[:, None] == self.levels_[None, :]
        out = (z[:, :, None] * member[:, None, :]).reshape(len(X), -1)  # (rows, values x levels), values major
        return pd.DataFrame(out, index=X.index, columns=self.get_feature_names_out())


def _text(column: pd.Series) -> np.ndarray:
    """A column's values as text, NaN as ``"nan"`` (pandas' ``astype(str)`` may keep NaN a float)."""
    return np.array([str(v) for v in column], dtype=str)


# The group slopes the preset's one-hot matrix gets: (group column, value columns); skipped if any is missing
SLOPES = ("Neighborhood", "TotalSF")


def _slope_columns(X: pd.DataFrame) -> list[str]:
    """``SLOPES``' columns when the frame has all of them, else none (``ColumnTransformer``'s column callable)."""
    return list(SLOPES) if set(SLOPES) <= set(X.columns) else []


def d2l_features(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The d2l recipe, exactly: standardize numerics over train+test features, NaN → 0, one-hot with NaN.

    (Transductive by design: d2l fits these statistics on all features, targets are never used.)
    """
    features = pd.concat([train, test])
    numeric = features.select_dtypes("number").columns
    features[numeric] = features[numeric].apply(lambda x: (x - x.mean()) / x.std())
    features[numeric] = features[numeric].fillna(0)
    features = pd.get_dummies(features, dummy_na=True).astype("float32")
    values = features.to_numpy()
    return values[: len(train)], values[len(train):]


def make_preprocessor() -> Pipeline:
    """The strong preset's feature pipeline: impute → ordinal → engineer → unskew → clip → scale + one-hot +
    a size slope per neighbourhood (``GroupSlopes``; the frame before this last step, which ``catboost_native``
    fits on, has none)."""
    numeric = make_column_selector(dtype_include="number")
    categorical = make_column_selector(dtype_exclude="number")
    encode = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                              ("scale", RobustScaler())]), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64), categorical),
            ("slopes", GroupSlopes(), _slope_columns),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([
        ("impute", HouseImputer()),
        ("ordinal", OrdinalMapper()),
        ("features", HouseFeatures()),
        ("unskew", SkewCorrector()),
        ("clip", RangeClipper()),
        ("encode", encode),
    ])
