"""Every bad input gets a one-line error naming the problem and writes nothing."""

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
    import pipelines.competitions.house_prices.pipeline as hp

    monkeypatch.setitem(hp.SHIPPED_MD5, "train.csv", "0" * 32)
    assert main(["house-prices", "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "md5 differs" in capsys.readouterr().err


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
