"""Run records: the one format of a run's ``<stem>.json`` (``RunRecord``) and its provenance (git, versions)."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from pipelines.core.paths import is_plain_name

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



# ------------------------------------------------------------------------------------------- run record
RECORD_VERSION = 2
# the metric of each competition that wrote version-1 records, as they scored then (frozen: a competition
# registered later writes the current version and names its metric itself)
V1_METRICS = {"house-prices": "log_rmse", "classify-leaves": "accuracy"}


@dataclasses.dataclass
class RunRecord:
    """The one format of a run's ``<stem>.json``: the writer writes it, every reader reads it.

    The fields every command relies on are typed here; whatever a competition adds (per-model scores,
    outliers, TTA choice, training curves...) goes in ``extra`` and is stored at the top level of the JSON
    beside them, so a record stays one flat, readable object. Records written before this format existed
    are upgraded on read by ``upgrade``, the one place that knows their older spellings.
    """

    competition: str  # the registry's name, also the folder under out_dir
    preset: str
    cv_mean: float  # the headline CV in ``metric``, every training row scored
    metric: str
    cv_std: float | None = None
    fold_scores: list[float] = dataclasses.field(default_factory=list)
    folds: dict = dataclasses.field(default_factory=dict)  # at least {"ids": fold of every training row}
    seed: int | None = None
    config: dict = dataclasses.field(default_factory=dict)
    data_dir: str | None = None  # the folder the run read (None: the competition's default)
    kaggle_competition: str | None = None
    timings: dict = dataclasses.field(default_factory=dict)  # at least {"total_s": wall seconds}
    created_utc: str = ""
    git: dict = dataclasses.field(default_factory=dict)
    packages: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)  # names beside the record: submission, oof, figures
    submissions: list[dict] = dataclasses.field(default_factory=list)  # what `submit` sent (appended later)
    extra: dict = dataclasses.field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def fold_ids(self) -> list | None:
        return self.folds.get("ids")

    def to_dict(self) -> dict:
        """The JSON object: the typed fields, with ``extra``'s keys beside them (a typed field wins)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        clash = sorted(set(self.extra) & set(fields))
        if clash:
            raise ValueError(f"run record: extra fields {clash} would hide the typed ones")
        return {**fields, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """A record read from disk, of any version (upgraded first, then checked: ``check``)."""
        data = check(upgrade(data))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(json.loads(Path(path).read_text()))


def upgrade(data: dict) -> dict:
    """A record of any earlier version in the current format; the only reader of the older spellings.

    Version 1 (no ``version`` field) had ``cv`` (the writer's) beside or instead of ``cv_mean``, ``folds``
    as a dict (house prices, blends) or as the bare list of fold ids (leaves), ``timings.total_seconds``
    or ``timings.total_s``, and its data folder under ``config.data_dir`` or ``data.dir``; leaves records
    named no metric (their CV is an accuracy, ``V1_METRICS``).
    """
    version = data.get("version", 1)
    if not _is(version, (int,)):
        raise ValueError(f"version is {_kind(version)}, not a number")
    if version > RECORD_VERSION:
        raise ValueError(f"run record version {version} is newer than this code ({RECORD_VERSION})")
    if version == RECORD_VERSION:
        return dict(data)
    out = dict(data)
    cv = out.pop("cv", None)
    out.setdefault("cv_mean", cv if cv is not None else math.nan)
    folds = out.get("folds")
    out["folds"] = {"ids": folds} if isinstance(folds, list) else dict(folds or {})
    timings = dict(out.get("timings") or {})
    if "total_seconds" in timings:
        timings.setdefault("total_s", timings.pop("total_seconds"))
    out["timings"] = timings
    if "data_dir" not in out:
        data_info, config = out.get("data"), out.get("config")
        where = (data_info.get("dir") if isinstance(data_info, dict) else None) or \
            (config.get("data_dir") if isinstance(config, dict) else None)
        out["data_dir"] = str(where) if where else None
    out.setdefault("metric", V1_METRICS.get(out.get("competition"), "cv"))
    out.setdefault("preset", "")
    out["version"] = RECORD_VERSION
    return out


# --------------------------------------------------------------------------------------- record check
_NUMBER = (int, float)
_TYPES: dict[str, tuple] = {  # the typed fields as JSON holds them; None in a tuple: null allowed
    "competition": (str,), "preset": (str,), "metric": (str,), "cv_mean": _NUMBER, "cv_std": (*_NUMBER, None),
    "fold_scores": (list,), "folds": (dict,), "seed": (int, None), "config": (dict,), "data_dir": (str, None),
    "kaggle_competition": (str, None), "timings": (dict,), "created_utc": (str,), "git": (dict,),
    "packages": (dict,), "files": (dict,), "submissions": (list,), "version": (int,),
}
_REQUIRED = ("competition", "preset", "cv_mean", "metric")  # the fields without a default


def _kind(value) -> str:
    """How a bad value is named in a message: ``text 'abc'``, ``null``, ``a list``..."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    return {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _is(value, types: tuple) -> bool:
    return (value is None and None in types) or (
        not isinstance(value, bool) and isinstance(value, tuple(t for t in types if t is not None)))


def check(data: dict) -> dict:
    """``data`` unchanged if every typed field has its type, else one ``ValueError`` naming the first bad one.

    A record is a file anyone may edit or truncate; every reader (``runs``, ``blend``, ``submit``) relies on
    these types, so a bad one is refused here, in one line naming the field, not as a traceback far away."""
    for name in _REQUIRED:
        if name not in data:
            raise ValueError(f"{name} is missing")
    for name, types in _TYPES.items():
        if name in data and not _is(data[name], types):
            want = {int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}[types[0]]
            raise ValueError(f"{name} is {_kind(data[name])}, not {want}")
    for i, score in enumerate(data.get("fold_scores", [])):
        if not _is(score, _NUMBER):
            raise ValueError(f"fold_scores[{i}] is {_kind(score)}, not a number")
    if not _is(data.get("folds", {}).get("ids"), (list, None)):
        raise ValueError(f"folds.ids is {_kind(data['folds']['ids'])}, not a list")
    if not _is(data.get("timings", {}).get("total_s", 0), _NUMBER):
        raise ValueError(f"timings.total_s is {_kind(data['timings']['total_s'])}, not a number")
    if not all(isinstance(s, dict) for s in data.get("submissions", [])):
        raise ValueError("submissions holds an entry that is not an object")
    files = data.get("files", {})
    tables = files.get("tables") or {}
    if not isinstance(tables, dict):
        raise ValueError(f"files.tables is {_kind(tables)}, not an object")
    names = {"submission": files.get("submission"), **({"oof": files["oof"]} if files.get("oof") else {}),
             **{f"tables.{k}": v for k, v in tables.items()}}
    for key, name in names.items():
        if not is_plain_name(name):
            raise ValueError(f"files.{key} is {_kind(name)}, not a file name beside the record")
    return data
