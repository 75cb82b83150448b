"""``python -m pipelines <command> ...``: one subcommand per verb, each a module with
``add_arguments(parser)`` and ``run(args) -> int`` (optuna's ``cli.py`` idiom).

Command modules are imported lazily so that ``--help`` and light commands do not pay for torch.

Every failure ends in one ``error:`` line. A ``PipelineError`` is a known failure and keeps its message
(exit 2); anything else is a bug or an environment problem: its full traceback goes to a log file
(``runs/logs/`` or ``$PIPELINES_LOG_DIR``, masked like everything else) and the line names that file
(exit 1); ``--debug`` prints the traceback inline as well. Library logging (e.g. Optuna's failed-trial
tracebacks) goes to the same file, not the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path

from pipelines.commands import common_parser
from pipelines.core.errors import PipelineError, mask_secrets

# verb -> (module, one-line help). Add a verb here; a competition's command comes from its registry entry.
VERBS: dict[str, tuple[str, str]] = {
    "tune": ("pipelines.commands.tune", "Optuna study over a pipeline's search space"),
    "submit": ("pipelines.commands.submit", "validate a submission and send it with the kaggle client"),
    "runs": ("pipelines.commands.runs", "leaderboard of the runs on disk"),
    "blend": ("pipelines.commands.blend", "blend runs on their out-of-fold predictions"),
}


def commands() -> dict[str, tuple[str, str]]:
    """Every command: one per registered competition (its pipeline), then the generic verbs."""
    from pipelines.competitions import list_competitions

    return {**{c.command: (c.module, c.help) for c in list_competitions()}, **VERBS}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    parent = common_parser()
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in commands().items():
        p = sub.add_parser(name, help=help_text, parents=[parent])
        if name == wanted:  # import only the module that will run
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


class MaskingFormatter(logging.Formatter):
    """Every logged line, traceback included, with its secrets masked (``mask_secrets``)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class LazyFileHandler(logging.FileHandler):
    """A log file created (folder included) only when the first line is written."""

    def __init__(self, path: Path):
        super().__init__(path, delay=True, encoding="utf-8")

    def _open(self):
        try:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            return super()._open()
        except OSError:  # runs/ not writable here: fall back to the temp folder
            self.baseFilename = os.path.join(tempfile.gettempdir(), Path(self.baseFilename).name)
            return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A log that cannot be written must not print logging's own traceback to the terminal."""


def log_handler(command: str) -> LazyFileHandler:
    """The handler of this invocation's log file, attached to the root logger."""
    folder = Path(os.environ.get("PIPELINES_LOG_DIR") or Path("runs") / "logs")
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{command}-{os.getpid()}.log"
    handler = LazyFileHandler(folder / name)
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def unexpected(err: BaseException, handler: LazyFileHandler) -> str:
    """Log ``err`` with its traceback; return the one line the user sees."""
    logging.getLogger("pipelines").error("unexpected error", exc_info=err)
    handler.flush()
    first = (str(err).strip().splitlines() or [""])[0]
    first = first if len(first) <= 300 else first[:297] + "..."
    where = (f"full traceback in {handler.baseFilename}" if os.path.isfile(handler.baseFilename)
             else "no log file could be written")
    return mask_secrets(f"{type(err).__name__}{': ' + first if first else ''} ({where}; --debug shows it here)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` with secrets masked: a library's warning may quote a URL or a setting."""
    text = mask_secrets(warnings.formatwarning(message, category, filename, lineno, line))
    with contextlib.suppress(OSError):
        (file or sys.stderr).write(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    handler = log_handler(next((a for a in argv if not a.startswith("-")), "cli"))
    warnings.showwarning = _show_warning
    try:
        args = build_parser(argv).parse_args(argv)  # imports the command: a broken install fails here, in one line
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place where any failure becomes one line
        if debug:  # the masked traceback inline, for a known failure (PipelineError) or any other
            print(mask_secrets("".join(traceback.format_exception(err))), file=sys.stderr, end="")
        if isinstance(err, PipelineError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"error: {unexpected(err, handler)}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    sys.exit(main())
