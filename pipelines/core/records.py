"""Run provenance: what a run record holds besides its scores (git state, versions, timings)."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGES = (
    "numpy", "pandas", "scikit-learn", "scipy", "torch", "torchvision", "timm", "lightgbm", "optuna", "kaggle",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_state(root: Path = REPO_ROOT) -> dict:
    """Commit hash and dirty flag of the checkout the code runs from (``None`` outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # --no-optional-locks: a status killed half way (Ctrl-C, timeout) must not leave .git/index.lock behind
    status = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_jsonable(obj):
    """``json.dump`` default: dataclasses, paths, NumPy scalars and arrays."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, default=to_jsonable, allow_nan=False) + "\n"


def data_dir_of(record: dict) -> str | None:
    """The data folder a run read: leaves records it under ``data.dir``, house prices under ``config``."""
    data = record.get("data")
    if isinstance(data, dict) and data.get("dir"):
        return str(data["dir"])
    config = record.get("config")
    if isinstance(config, dict) and config.get("data_dir"):
        return str(config["data_dir"])
    return None
