"""Competition CSVs read with one-line errors for every way they can be wrong.

Checked here, once for every pipeline: a missing, empty or unparsable file; missing columns; a column
name given twice (pandas would silently rename the second one ``X.1`` and the model would treat it as a
new feature); infinite or absurdly large numbers (``1e308`` overflows the models' sums of squares); text
in a numeric column. Every message names the file, the column and the line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.errors import PipelineError

# |value| above this is refused in a numeric column: no real feature or target comes near it, and squares
# and sums of such values overflow float64 inside the models
MAX_ABS = 1e12


def read_csv(path: Path, required: Iterable[str] = (), dtype=None) -> pd.DataFrame:
    """Read ``path``; refuse a missing, empty or unparsable file, or one lacking ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: empty CSV (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a readable CSV ({err})") from None
    if frame.empty:
        raise PipelineError(f"{path}: empty CSV (header only, no rows)")
    check_header(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(map(repr, missing))}")
    check_finite(frame, frame.select_dtypes("number").columns, str(path))
    return frame


def check_header(path: Path) -> None:
    """Refuse a column name that appears twice in the raw header (pandas renames the second to ``X.1``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # pandas read it; its own reading is the reference
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        key = name.strip()
        if key in seen:
            raise PipelineError(f"{path}: column {key!r} appears twice in the header (columns {seen[key]} and {i})")
        seen[key] = i


def check_finite(frame: pd.DataFrame, columns: Iterable[str], name: str, max_abs: float = MAX_ABS) -> None:
    """Refuse an infinite value, or one beyond ``max_abs``, in a numeric column, naming column, value and line."""
    for c in columns:
        if c not in frame or not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
            continue
        values = frame[c].to_numpy(dtype=float, na_value=np.nan)
        bad = np.flatnonzero(np.isinf(values) | (np.abs(np.nan_to_num(values)) > max_abs))
        if len(bad):
            row = int(bad[0])
            what = "an infinite value" if np.isinf(values[row]) else f"an absurd value (|x| > {max_abs:g})"
            raise PipelineError(f"{name}: {what} {values[row]:g} in column {c!r} (line {row + 2}"
                                f"{f', and {len(bad) - 1} more' if len(bad) > 1 else ''})")


def check_unique(frame: pd.DataFrame, column: str, name: str) -> None:
    dup = frame[column][frame[column].duplicated()]
    if len(dup):
        value = dup.iloc[0]
        value = value.item() if hasattr(value, "item") else value
        raise PipelineError(f"{name}: duplicate {column} {value!r} ({len(dup)} duplicate(s))")


def check_numeric(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    """Refuse a string in a column that must be numeric, naming column, value and row."""
    for c in columns:
        if c not in frame or pd.api.types.is_numeric_dtype(frame[c]):
            continue
        parsed = pd.to_numeric(frame[c], errors="coerce")
        bad = frame[c][parsed.isna() & frame[c].notna()]
        if len(bad):
            row = int(bad.index[0]) + 2  # 1-based, after the header line
            raise PipelineError(f"{name}: non-numeric value {bad.iloc[0]!r} in numeric column {c!r} (line {row})")
        frame[c] = parsed
    check_finite(frame, columns, name)
