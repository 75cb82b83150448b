"""The generic CLI verbs (tune, blend, submit, runs) of ``python -m pipelines``, and the flags every command shares.

They sit on top: nothing in core or in a competition imports them."""

from __future__ import annotations

import argparse


def common_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """Flags every command shares, as a parent parser. ``defaults=False`` leaves them unset
    (``argparse.SUPPRESS``) for a command's own sub-commands (``tune <competition>``): a sub-parser's defaults
    would overwrite a value given before the sub-command."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)
    parent.add_argument("--seed", type=int, help="seed for folds, models and augmentation")
    parent.add_argument("--out-dir", help="where runs are written (default: submissions)")
    parent.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    if defaults:
        parent.set_defaults(seed=0, out_dir="submissions")
    return parent
