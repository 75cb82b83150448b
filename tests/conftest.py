"""Shared fixtures: the shipped house-prices data, copies of it to break on purpose, a blocked network."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOUSE_DIR = REPO / "data" / "house-prices"


def _share_the_cores() -> None:
    """Under pytest-xdist (``-n auto`` in pyproject's addopts) each worker, and every process its tests start,
    uses its share of the cores for torch, OpenMP and BLAS threads (set before any of them is imported). Two
    workers of two threads each on a 2-core CPU spin against each other: two such torch processes ran about
    10x slower than one."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        # the cores this process may use (Linux: its affinity mask; elsewhere all of them)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = str(max(1, cores // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(name, share)


_share_the_cores()


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
