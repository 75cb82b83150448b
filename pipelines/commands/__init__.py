"""The generic CLI verbs (tune, blend, submit, runs) of ``python -m pipelines``, and the flags every command shares.

They sit on top: nothing in core or in a competition imports them.

The ``type=`` helpers below check a numeric flag's range in the parser, so a bad value is argparse's one
``error:`` line naming the flag (exit 2) before any work or folder exists, instead of a library's range error
deep inside the run (``--seed -1`` reached numpy, ``--lr nan`` a JSON error after the run folder was made).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from pipelines.core.seed import SEED_SPACE
from pipelines.core.tracking import MlflowFlag

SEED_MAX = SEED_SPACE - 1  # numpy's (and sklearn's) seed range is 0..2**32-1


def _number(value: str, kind: type) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {value!r}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer flag that must be ``>= low`` (``--folds``: 2, ``--trials``: 1, ``--workers``: 0...)."""
    def parse(value: str) -> int:
        n = _number(value, int)
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    return parse


def seed_int(value: str) -> int:
    """A seed numpy accepts: an integer in 0..2**32-1."""
    n = _number(value, int)
    if not 0 <= n <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{SEED_MAX}, got {n}")
    return n


def float_in(low: float = -math.inf, high: float = math.inf) -> Callable[[str], float]:
    """A finite float flag in ``[low, high]`` (``--mix-prob``: 0..1, ``--weight-decay``: at least 0)."""
    def parse(value: str) -> float:
        x = _number(value, float)
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
        if not low <= x <= high:
            bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {x:g}")
        return x

    return parse


finite_float = float_in()


def positive_float(value: str) -> float:
    """A finite float flag above 0 (``--lr``, ``--timeout``)."""
    x = finite_float(value)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {x:g}")
    return x


def common_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """Flags every command shares, as a parent parser. ``defaults=False`` leaves them unset
    (``argparse.SUPPRESS``) for a command's own sub-commands (``tune <competition>``): a sub-parser's defaults
    would overwrite a value given before the sub-command."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)
    parent.add_argument("--seed", type=seed_int, help=f"seed for folds, models and augmentation (0..{SEED_MAX})")
    parent.add_argument("--out-dir", help="where runs are written (default: submissions)")
    parent.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    parent.add_argument("--mlflow", action=MlflowFlag,
                        help="mirror the run into MLflow (submit: its public score; runs: every run): "
                             "$MLFLOW_TRACKING_URI, else sqlite RUNS_DIR/mlflow.db (docs/tracking.md)")
    if defaults:
        parent.set_defaults(seed=0, out_dir="submissions")
    return parent
