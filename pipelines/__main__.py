"""``python -m pipelines <command> ...``: one subcommand per verb, each a module with
``add_arguments(parser)`` and ``run(args) -> int`` (optuna's ``cli.py`` idiom).

Command modules are imported lazily so that ``--help`` and light commands do not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.errors import PipelineError

# name -> (module, one-line help). Add a pipeline or verb here and nowhere else.
COMMANDS: dict[str, tuple[str, str]] = {
    "house-prices": ("pipelines.house_prices", "House Prices: K-fold CV, then a validated submission"),
    "leaves": ("pipelines.leaves", "Classify Leaves: fine-tune a backbone with K-fold CV and TTA"),
    "tune": ("pipelines.tune", "Optuna study over a pipeline's search space"),
    "submit": ("pipelines.submit", "validate a submission and send it with the kaggle client"),
    "runs": ("pipelines.runs", "leaderboard of the runs on disk"),
    "blend": ("pipelines.blend", "blend runs on their out-of-fold predictions"),
}


def common_parser() -> argparse.ArgumentParser:
    """Flags every command shares."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--seed", type=int, default=0, help="seed for folds, models and augmentation")
    parent.add_argument("--out-dir", default="submissions", help="where runs are written (default: submissions)")
    return parent


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    parent = common_parser()
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, parents=[parent])
        if name == wanted:  # import only the module that will run
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
