"""Shared fixtures: the shipped house-prices data, copies of it to break on purpose, a blocked network."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOUSE_DIR = REPO / "data" / "house-prices"


@pytest.fixture
def house_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped house-prices folder."""
    dst = tmp_path / "house"
    shutil.copytree(HOUSE_DIR, dst)
    return dst


def _load_helper(name: str):
    """A helper module beside this file (tests are not a package: ``--import-mode=importlib``)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


network_guard = _load_helper("network_guard")


@pytest.fixture
def no_network(monkeypatch) -> list[tuple]:
    """The socket layer blocked for this test (``network_guard``); yields the attempts made."""
    return network_guard.block(monkeypatch.setattr)


@pytest.fixture
def offline_python() -> list[str]:
    """The argv prefix of a ``python -m pipelines`` child whose socket layer is blocked."""
    return [sys.executable, "-c", network_guard.CHILD_MAIN]
