"""The one rule for names a user gives that become part of a path: they stay inside their folder.

A CSV row naming ``../outside/x.png`` or ``/etc/passwd``, a study named ``../../x`` or a run named
``/tmp/elsewhere`` would otherwise read or write outside the folder the user pointed at. The check is on the
name as written (lexical), before anything is read or written: a symlink placed inside the folder is the
user's own choice and stays allowed.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from pipelines.core.errors import PipelineError


def escapes(name: str | PurePath) -> bool:
    """Whether ``name``, joined to any folder, would leave it: absolute, a drive, or ``..`` past its top."""
    text = str(name)
    if not text or "\x00" in text or os.path.isabs(text) or PurePath(text).drive:
        return True
    return os.path.normpath(text).split(os.sep)[0] == ".."


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is one plain file or folder name (text, no separator, not ``.`` or ``..``): what a
    name must be when the product places it in a folder of its own choosing (a run record's files beside the
    record, a study's database and plots under ``RUNS_DIR/tune``)."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\x00")


def inside(root: str | Path, name: str | PurePath, what: str) -> Path:
    """``root / name``, or one :class:`PipelineError` naming ``what`` (e.g. ``train.csv row 7``) when ``name``
    is empty or would leave ``root``."""
    if escapes(name):
        raise PipelineError(f"{what}: {str(name)!r} is not a path inside {root} (absolute paths and '..' "
                            "that leave the folder are refused)")
    return Path(root) / name
