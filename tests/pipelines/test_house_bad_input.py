"""Every bad input gets a one-line error naming the problem and writes nothing."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from pipelines.__main__ import main


def _cli(data_dir, out_dir, *extra):
    return main(["house-prices", "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--no-progress", *extra])


def _edit(folder, name, fn):
    path = folder / name
    fn(pd.read_csv(path)).to_csv(path, index=False)


BREAKS = {
    "missing target": ("train.csv", lambda f: f.drop(columns=["SalePrice"]), "missing column(s) 'SalePrice'"),
    "missing id": ("test.csv", lambda f: f.drop(columns=["Id"]), "missing column(s) 'Id'"),
    "test columns missing": ("test.csv", lambda f: f.drop(columns=["LotArea", "Street"]), "test.csv: missing column"),
    "duplicate ids": ("train.csv", lambda f: f.assign(Id=f["Id"].where(f.index != 5, 1)), "duplicate Id 1"),
    "non-numeric": ("train.csv", lambda f: f.assign(LotArea=f["LotArea"].astype(str).where(f.index != 9, "big")),
                    "non-numeric value 'big' in numeric column 'LotArea' (line 11)"),
    "bad target": ("train.csv", lambda f: f.assign(SalePrice=f["SalePrice"].where(f.index != 3, -1)),
                   "SalePrice must be a positive"),
    "absurdly low target": ("train.csv", lambda f: f.assign(SalePrice=f["SalePrice"].where(f.index != 3, 0.001)),
                            "SalePrice must be a positive price of at least 1 on every row"),
    "no feature column": ("train.csv", lambda f: f[["Id", "SalePrice"]], "no column besides Id and SalePrice"),
    "blank test id": ("test.csv", lambda f: f.assign(Id=f["Id"].where(f.index != 7)), "test.csv: blank Id on line 9"),
    "blank train id": ("train.csv", lambda f: f.assign(Id=f["Id"].where(f.index != 2)),
                       "train.csv: blank Id on line 4"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_bad_input_one_line_error_and_nothing_written(case, house_copy, tmp_path, capsys):
    name, fn, message = BREAKS[case]
    _edit(house_copy, name, fn)
    out = tmp_path / "out"
    assert _cli(house_copy, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("content", ["", "Id,SalePrice\n"])
def test_empty_csv(content, house_copy, tmp_path, capsys):
    (house_copy / "train.csv").write_text(content)
    assert _cli(house_copy, tmp_path / "out") == 2
    assert "train.csv: empty CSV" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_folder_and_tampered_shipped_copy(tmp_path, capsys, monkeypatch):
    assert _cli(tmp_path / "nope", tmp_path / "out") == 2
    assert "no such folder" in capsys.readouterr().err
    assert _cli("", tmp_path / "out") == 2  # an unset $DIR must not fall back to the shipped data
    assert capsys.readouterr().err.startswith("error: --data-dir is empty")
    import pipelines.competitions.house_prices.pipeline as hp

    monkeypatch.setitem(hp.SHIPPED_MD5, "train.csv", "0" * 32)
    assert main(["house-prices", "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "md5 differs" in capsys.readouterr().err


def test_every_missing_required_column_in_one_line(house_copy, tmp_path, capsys):
    _edit(house_copy, "train.csv", lambda f: f.drop(columns=["Id", "SalePrice"]))
    _edit(house_copy, "test.csv", lambda f: f.drop(columns=["Id"]))
    assert _cli(house_copy, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "train.csv: missing column(s) 'Id', 'SalePrice'; " in err and "test.csv: missing column(s) 'Id'" in err
    assert "\n" not in err


def test_missing_feature_columns_adapt_and_every_figure_shares_one_scale(house_copy, tmp_path, capsys):
    """No GrLivArea: the features that need it and the outlier rule are skipped (and said so), in both presets.
    Prices in thousands (34.9..755): each model's CV is the headline's scale (log price, not log1p)."""
    for name in ("train.csv", "test.csv"):  # a few hundred rows keep both presets' CVs short
        _edit(house_copy, name, lambda f: f.drop(columns=["GrLivArea"]).head(300))
    _edit(house_copy, "train.csv", lambda f: f.assign(SalePrice=f["SalePrice"] / 1000))
    for preset, models in (("strong", ["--models", "lasso"]), ("d2l", [])):
        assert _cli(house_copy, tmp_path / "out", "--preset", preset, "--folds", "2", *models) == 0
        out = capsys.readouterr().out
        assert "documented outliers (no GrLivArea)" in out and ("QualSF (no GrLivArea)" in out) == (preset == "strong")
        model, headline = (float(re.search(pattern, out).group(1)) for pattern in
                           (r": CV (\d\.\d+) ±", r"CV log-RMSE on all 300 rows (\d\.\d+)"))
        assert model == headline
    record = json.loads(next((tmp_path / "out").rglob("*_strong_*.json")).read_text())
    assert record["skipped_for_missing_columns"]["QualSF"] == ["GrLivArea"]


def test_unknown_columns_take_their_kind_from_their_values(house_copy, tmp_path, capsys):
    """Unknown float columns are scaled numbers (one column each), not one-hot categories per distinct value;
    unknown text stays categorical and the schema's numeric codes (MSSubClass) keep their domain rule."""
    from features.house import make_preprocessor

    train = pd.read_csv(house_copy / "train.csv").drop(columns=["Id", "SalePrice"])
    rng = np.random.default_rng(0)
    extra = {f"x{i}": rng.normal(size=len(train)) for i in range(3)}
    base = make_preprocessor().fit(train).transform(train).shape[1]
    wide = make_preprocessor().fit(train.assign(**extra, tag=np.where(train.index % 2, "a", "b")))
    names = list(wide.get_feature_names_out())
    assert len(names) == base + 3 + 2 and {"x0", "x1", "x2", "tag_a", "tag_b"} <= set(names)
    assert any(n.startswith("MSSubClass_") for n in names)
    _edit(house_copy, "train.csv", lambda f: f.assign(x0=1.5))  # numeric in train, text in test: one line
    _edit(house_copy, "test.csv", lambda f: f.assign(x0=np.where(f.index == 4, "big", "2.5")))
    assert _cli(house_copy, tmp_path / "out") == 2
    assert "test.csv: non-numeric value 'big' in numeric column 'x0' (line 6)" in capsys.readouterr().err


def test_unseen_categories_and_all_nan_columns_are_handled(house_copy, tmp_path, capsys):
    _edit(house_copy, "test.csv", lambda f: f.assign(Neighborhood=f["Neighborhood"].where(f.index > 10, "Atlantis"),
                                                     MSZoning="Martian", Alley=np.nan))
    _edit(house_copy, "train.csv", lambda f: f.assign(PoolQC=np.nan, LotFrontage=np.nan))
    for preset, models in (("strong", ["--models", "lasso,lgbm"]), ("d2l", [])):
        assert _cli(house_copy, tmp_path / "out", "--preset", preset, "--folds", "2", *models) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last.startswith("submission: ")
        sub = pd.read_csv(last.removeprefix("submission: "))
        assert len(sub) == 1459 and np.isfinite(sub["SalePrice"]).all() and (sub["SalePrice"] > 0).all()
