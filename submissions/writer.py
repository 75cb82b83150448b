"""The one submission writer: validate against the competition's format, then write without overwriting.

A run lands as ``<out_dir>/<competition>/<UTC timestamp>_<preset>_cv<score>`` with suffixes
``.csv`` (the submission), ``.json`` (the run record), ``_oof.csv`` (out-of-fold predictions) and any
figures as ``_<name>.png``. Every file is created exclusively (``open(..., "x")``), so nothing is ever
overwritten: a name clash moves the whole run to a ``-2``, ``-3``... stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import PipelineError
from pipelines.records import dumps, git_state, package_versions, utc_now


@dataclass
class SubmissionSpec:
    """What a valid submission looks like for one competition."""

    competition: str
    columns: list[str]
    ids: pd.Series | None = None  # the test ids, in the order the competition expects
    positive: bool = False  # every prediction must be > 0 (house prices)
    labels: set | None = None  # classification: predictions must come from this set
    numeric: bool = True  # prediction columns must be finite numbers

    @property
    def id_column(self) -> str:
        return self.columns[0]


def validate_submission(frame: pd.DataFrame, spec: SubmissionSpec) -> None:
    """Raise ``PipelineError`` naming the first problem; return ``None`` when the frame is valid."""
    where = f"{spec.competition} submission"
    if list(frame.columns) != list(spec.columns):
        raise PipelineError(f"{where}: columns are {list(frame.columns)}, expected {spec.columns}")
    if frame.empty:
        raise PipelineError(f"{where}: no rows")
    ids = frame[spec.id_column]
    if ids.isna().any():
        raise PipelineError(f"{where}: missing ids")
    if ids.duplicated().any():
        raise PipelineError(f"{where}: duplicate ids, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    if spec.ids is not None:
        expected = pd.Series(spec.ids).astype(str).tolist()
        got = ids.astype(str).tolist()
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            detail = (
                f"{len(missing)} missing (e.g. {missing[0]!r})" if missing
                else f"{len(extra)} unknown (e.g. {extra[0]!r})" if extra
                else "same ids in a different order"
            )
            raise PipelineError(f"{where}: ids differ from the test set: {detail}")
    for col in spec.columns[1:]:
        values = frame[col]
        if spec.labels is not None:
            unknown = sorted(set(values.astype(str)) - {str(v) for v in spec.labels})
            if values.isna().any() or unknown:
                bad = unknown[0] if unknown else "NaN"
                raise PipelineError(f"{where}: column {col!r} has a label not in the training set: {bad!r}")
            continue
        if spec.numeric:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(numbers).all():
                raise PipelineError(f"{where}: column {col!r} has NaN, infinite or non-numeric values")
            if spec.positive and (numbers <= 0).any():
                raise PipelineError(f"{where}: column {col!r} must be positive, min is {numbers.min():g}")


@dataclass
class RunFiles:
    """Paths of everything one run wrote."""

    submission: Path
    record: Path
    oof: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)


def _free_stem(folder: Path, base: str) -> str:
    stem, n = base, 1
    while any(p.name.startswith(stem + ".") or p.name.startswith(stem + "_") for p in folder.iterdir()):
        n += 1
        stem = f"{base}-{n}"
    return stem


def write_run(
    frame: pd.DataFrame,
    spec: SubmissionSpec,
    *,
    out_dir: str | Path,
    preset: str,
    cv_score: float,
    record: dict,
    oof: pd.DataFrame | None = None,
    figures: dict | None = None,
) -> RunFiles:
    """Validate ``frame`` and write the submission, its run record, OOF predictions and figures.

    ``record`` is completed with the time, git state, package versions and the written paths.
    ``figures`` maps a short name to a matplotlib figure, saved as PNG beside the record.
    """
    validate_submission(frame, spec)
    folder = Path(out_dir) / spec.competition
    folder.mkdir(parents=True, exist_ok=True)
    now = utc_now()
    safe_preset = "".join(c if c.isalnum() or c in "-." else "-" for c in preset)
    stem = _free_stem(folder, f"{now:%Y%m%dT%H%M%SZ}_{safe_preset}_cv{cv_score:.5f}")
    files = RunFiles(submission=folder / f"{stem}.csv", record=folder / f"{stem}.json")
    if oof is not None:
        files.oof = folder / f"{stem}_oof.csv"
    for name in figures or {}:
        files.figures[name] = folder / f"{stem}_{name}.png"

    full = {
        "competition": spec.competition,
        "preset": preset,
        "created_utc": now.isoformat(timespec="seconds"),
        "cv": cv_score,
        **record,
        "git": git_state(),
        "packages": package_versions(),
        "files": {
            "submission": files.submission.name,
            "oof": files.oof.name if files.oof else None,
            "figures": {k: v.name for k, v in files.figures.items()},
        },
    }
    with open(files.submission, "x", newline="") as fh:
        frame.to_csv(fh, index=False)
    if oof is not None:
        with open(files.oof, "x", newline="") as fh:
            oof.to_csv(fh, index=False)
    for name, fig in (figures or {}).items():
        with open(files.figures[name], "xb") as fh:
            fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    with open(files.record, "x") as fh:
        fh.write(dumps(full))
    return files
