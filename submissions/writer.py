"""The one submission writer: validate against the competition's format, then publish a run atomically.

A run lands as ``<out_dir>/<competition>/<UTC timestamp>_<preset>_cv<score>`` with suffixes
``.csv`` (the submission), ``.json`` (the run record), ``_oof.csv`` (out-of-fold predictions), any
further tables as ``_<name>.csv`` (leaves: ``_test_probs.csv``, the test probabilities a blend needs) and
any figures as ``_<name>.png``.

A run appears whole or not at all, and never overwrites anything:

1. everything is checked and serialised first (the record too, so a NaN score fails before any file);
2. the files are written into a hidden staging folder inside the target folder (same filesystem);
3. they are published by hard links (``os.link`` fails if the name exists: no overwrite, ever), the
   submission first, the record last. Linking the submission is the atomic claim of the stem: of two
   runs finishing in the same second, the second one's link fails and it moves to ``-2``, ``-3``...
   Ctrl-C and SIGTERM are held back during the few links and delivered right after, and any error
   unlinks what was already published, so an interrupted run leaves either a complete run or nothing
   (the CLI raises SIGTERM like Ctrl-C, ``errors.Terminated``, so the staging folder is removed for it too;
   a full disk is one line naming the folder, ``errors.disk_error``).
   (Only a SIGKILL or a power cut inside the links' microseconds can leave a run without its record;
   ``runs`` ignores such files, and a staging folder a killed writer left is removed by the next writer.)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.errors import PipelineError, disk_error
from pipelines.core.records import RunRecord, dumps, git_state, package_versions, utc_now

STAGING = ".staging"


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
    tables: dict[str, Path] = field(default_factory=dict)


def check_writable_dir(path: str | Path, flag: str = "--out-dir") -> Path:
    """Refuse, before any work, a folder that is a file, lies under a file, or cannot be written.

    The folder need not exist: its nearest existing parent must then be a writable folder. Writability is
    probed by creating a temporary file (``os.access`` says yes to root even on a read-only mount).
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"{probe} is a file"
        raise PipelineError(f"{flag} {path}: {where}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise PipelineError(f"{flag} {path}: cannot write in {probe} ({err.strerror or type(err).__name__})") from None
    return path


def _first_nonfinite(obj, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in a record (``models.lasso.fold_scores[1]``), if any."""
    if isinstance(obj, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple | np.ndarray):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        return path if isinstance(obj, float | np.floating) and not math.isfinite(obj) else None
    for sub, value in items:
        found = _first_nonfinite(value, sub)
        if found:
            return found
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep_staging(folder: Path) -> None:
    """Remove staging folders left by writers on this host that no longer run (killed with SIGKILL), or by an
    earlier write of this very process (a write runs to its end before the next one starts)."""
    host = socket.gethostname()
    for path in folder.glob(f"{STAGING}-*"):
        parts = path.name.split("-")  # .staging-<pid>-<host...>-<random>
        if len(parts) < 4 or not parts[1].isdigit() or "-".join(parts[2:-1]) != host:
            continue
        pid = int(parts[1])
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM back for the duration of the block, then deliver them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is None:  # installed from C: leave it alone
            continue
        previous[signum] = signal.signal(signum, lambda n, _frame: received.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def _taken(folder: Path, stem: str) -> bool:
    return any(p.name.startswith((stem + ".", stem + "_")) for p in folder.iterdir())


def _place(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` unless ``dst`` exists (``FileExistsError``): never an overwrite."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this filesystem: claim the name exclusively, then move onto the claim
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(src, dst)


def _publish(folder: Path, base: str, staged: dict[str, Path], staging: Path, render_record) -> str:
    """Link the staged files under the first free stem, record last; return the stem."""
    for n in range(1, 10_000):
        stem = base if n == 1 else f"{base}-{n}"
        if _taken(folder, stem):
            continue
        record = staging / f"record-{n}.json"
        record.write_text(render_record(stem))
        linked: list[Path] = []
        try:
            for suffix, src in [*staged.items(), (".json", record)]:
                dst = folder / f"{stem}{suffix}"
                _place(src, dst)
                linked.append(dst)
            return stem
        except FileExistsError:  # another run claimed this stem between the listing and the link
            for path in linked:
                path.unlink(missing_ok=True)
        except BaseException:
            for path in linked:
                path.unlink(missing_ok=True)
            raise
    raise PipelineError(f"{folder}: no free run name for {base}")


def write_run(
    frame: pd.DataFrame,
    spec: SubmissionSpec,
    *,
    out_dir: str | Path,
    record: RunRecord,
    oof: pd.DataFrame | None = None,
    figures: dict | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> RunFiles:
    """Validate ``frame`` and publish the submission, its run record, OOF predictions and figures together.

    ``record`` is completed with the time, git state, package versions and the written paths.
    ``figures`` maps a short name to a matplotlib figure, saved as PNG beside the record; ``tables`` maps a
    short name to a frame, saved as ``_<name>.csv`` and named in the record's ``files.tables``.
    """
    if record.competition != spec.competition:
        raise ValueError(f"a {record.competition} record with a {spec.competition} submission")
    preset, cv_score = record.preset, record.cv_mean
    validate_submission(frame, spec)
    if not math.isfinite(cv_score):
        raise PipelineError(f"{spec.competition}: the CV score is {cv_score} (a fold had no scorable rows, or a "
                            "model diverged); nothing was written")
    folder = check_writable_dir(Path(out_dir) / spec.competition)
    now = utc_now()
    safe_preset = "".join(c if c.isalnum() or c in "-." else "-" for c in preset)
    base = f"{now:%Y%m%dT%H%M%SZ}_{safe_preset}_cv{cv_score:.5f}"
    tables = tables or {}
    if "oof" in tables or not all(name.isidentifier() for name in tables):
        raise ValueError(f"table names must be identifiers other than 'oof': {sorted(tables)}")
    suffixes = {"submission": ".csv", **({"oof": "_oof.csv"} if oof is not None else {}),
                **{f"figure:{name}": f"_{name}.png" for name in figures or {}}}
    record = replace(record, created_utc=now.isoformat(timespec="seconds"), git=git_state(),
                     packages=package_versions())

    def render_record(stem: str) -> str:
        return dumps(replace(record, files={
            "submission": stem + suffixes["submission"],
            "oof": stem + suffixes["oof"] if oof is not None else None,
            "figures": {name: f"{stem}_{name}.png" for name in figures or {}},
            "tables": {name: f"{stem}_{name}.csv" for name in tables},
        }).to_dict())

    try:
        render_record(base)  # serialise before any file exists: NaN or an odd type fails here
    except (TypeError, ValueError) as err:
        where = _first_nonfinite(record.to_dict())
        detail = f"{where} is not a finite number" if where else str(err)
        raise PipelineError(f"{spec.competition}: the run record cannot be saved ({detail}); nothing was written") \
            from None

    folder.mkdir(parents=True, exist_ok=True)
    _sweep_staging(folder)
    staging = None
    try:
        with _signals_held():  # a Ctrl-C between making the folder and owning it would leak it
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}-{os.getpid()}-{socket.gethostname()}-", dir=folder))
        staged = {suffixes["submission"]: staging / "submission.csv"}
        frame.to_csv(staged[".csv"], index=False)
        if oof is not None:
            staged["_oof.csv"] = staging / "oof.csv"
            oof.to_csv(staged["_oof.csv"], index=False)
        for name, table in tables.items():
            path = staged[f"_{name}.csv"] = staging / f"table-{len(staged)}.csv"
            table.to_csv(path, index=False)
        for name, fig in (figures or {}).items():
            path = staged[f"_{name}.png"] = staging / f"figure-{len(staged)}.png"
            fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        with _signals_held():
            stem = _publish(folder, base, staged, staging, render_record)
    except OSError as err:  # a full disk, a quota, a folder made read-only since the check: one line naming it
        if disk_error(err, folder) is None:
            raise
        raise disk_error(err, folder) from err
    finally:
        if staging is not None:
            with _signals_held():  # a second Ctrl-C must not stop the clean-up half way
                shutil.rmtree(staging, ignore_errors=True)
    return RunFiles(submission=folder / f"{stem}.csv", record=folder / f"{stem}.json",
                    oof=folder / f"{stem}_oof.csv" if oof is not None else None,
                    figures={name: folder / f"{stem}_{name}.png" for name in figures or {}},
                    tables={name: folder / f"{stem}_{name}.csv" for name in tables})
