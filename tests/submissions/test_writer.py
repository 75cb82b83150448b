"""The shared writer: validation of malformed frames, and it never overwrites a file."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.core.errors import PipelineError
from pipelines.core.records import RunRecord
from submissions.writer import SubmissionSpec, validate_submission, write_run

SPEC = SubmissionSpec("toy", ["Id", "SalePrice"], ids=pd.Series([1, 2, 3]), positive=True)
GOOD = pd.DataFrame({"Id": [1, 2, 3], "SalePrice": [1.0, 2.0, 3.0]})


@pytest.mark.parametrize(
    "frame, message",
    [
        (GOOD[["SalePrice", "Id"]], "columns are"),
        (GOOD.rename(columns={"SalePrice": "price"}), "columns are"),
        (GOOD.iloc[:2], "missing"),
        (pd.concat([GOOD, pd.DataFrame({"Id": [4], "SalePrice": [1.0]})]), "unknown"),
        (GOOD.assign(Id=[1, 1, 3]), "duplicate ids"),
        (GOOD.assign(Id=[3, 2, 1]), "different order"),
        (GOOD.assign(SalePrice=[1.0, np.nan, 3.0]), "NaN"),
        (GOOD.assign(SalePrice=[1.0, np.inf, 3.0]), "infinite"),
        (GOOD.assign(SalePrice=["1", "x", "3"]), "non-numeric"),
        (GOOD.assign(SalePrice=[1.0, -2.0, 3.0]), "positive"),
        (GOOD.iloc[:0], "no rows"),
    ],
)
def test_malformed_frames_are_rejected_with_one_line(frame, message):
    with pytest.raises(PipelineError, match=message) as err:
        validate_submission(frame, SPEC)
    assert "\n" not in str(err.value)


def test_labels_must_come_from_the_training_set():
    spec = SubmissionSpec("leaves", ["image", "label"], ids=pd.Series(["a.jpg", "b.jpg"]), labels={"oak", "ash"})
    validate_submission(pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": ["oak", "ash"]}), spec)
    with pytest.raises(PipelineError, match="not in the training set: 'elm'"):
        validate_submission(pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": ["oak", "elm"]}), spec)


def _write(tmp_path, **kw):
    return write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse", seed=0),
                     oof=pd.DataFrame({"Id": [1]}), **kw)


def test_writer_never_overwrites_and_records_provenance(tmp_path):
    first, second = _write(tmp_path), _write(tmp_path)  # same second, same name wanted
    assert first.submission != second.submission and first.record != second.record
    assert first.submission.read_text() == second.submission.read_text()
    record = json.loads(first.record.read_text())
    assert record["files"]["submission"] == first.submission.name
    assert {"commit", "dirty"} <= set(record["git"]) and "numpy" in record["packages"]
    assert first.submission.name.endswith("_p_cv0.10000.csv") and first.oof.exists()
    files = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert len(files) == 6


def test_invalid_frame_writes_nothing(tmp_path):
    with pytest.raises(PipelineError):
        write_run(GOOD.iloc[:2], SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse"))
    assert not (tmp_path / "toy").exists()
