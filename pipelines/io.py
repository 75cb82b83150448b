"""Reading competition CSVs with one-line errors for every way they can be wrong (shared by pipelines)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipelines.errors import PipelineError


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


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
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(map(repr, missing))}")
    return frame


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
