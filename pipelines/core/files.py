"""Files on disk for every pipeline: digests (a run records its inputs' and outputs' SHA-256) and atomic
writes (a reader never sees half a file; a killed writer leaves the previous version)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pipelines.core.errors import disk_error


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks by ``hashlib.file_digest``."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def md5(path: Path) -> str:
    return file_digest(path, "md5")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write ``path`` all at once: the caller writes a temporary file beside it, which then replaces ``path``
    in one ``os.replace``; on any failure (Ctrl-C too) the temporary file is removed and ``path`` is untouched.

    Readers never see half a file and a killed writer leaves its previous version (records, checkpoints,
    caches that parallel DDP ranks may write at once: each writer has its own temporary name). The data is
    fsynced before the replace: after a power cut the name holds the old file or the whole new one, never an
    empty one that a resume would trust. A full disk (or a read-only, forbidden folder) is one line naming
    ``path`` (``errors.disk_error``), not the bare ``[Errno 28]`` of whichever write hit it.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        known = disk_error(err, path) if isinstance(err, OSError) else None
        if known is not None:
            raise known from err
        raise
