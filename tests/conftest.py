"""Shared fixtures: the shipped house-prices data, and copies of it to break on purpose."""

import shutil
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parent.parent
HOUSE_DIR = REPO / "data" / "house-prices"


@pytest.fixture
def house_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped house-prices folder."""
    dst = tmp_path / "house"
    shutil.copytree(HOUSE_DIR, dst)
    return dst
