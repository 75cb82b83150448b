"""``python -m pipelines <command> ...``: one subcommand per verb, each a module with
``add_arguments(parser)`` and ``run(args) -> int`` (optuna's ``cli.py`` idiom).

Command modules are imported lazily so that ``--help`` and light commands do not pay for torch.

Every failure ends in one ``error:`` line. A ``PipelineError`` is a known failure and keeps its message
(exit 2); anything else is a bug or an environment problem: its full traceback goes to a log file
(``runs/logs/`` or ``$PIPELINES_LOG_DIR``, masked like everything else) and the line names that file
(exit 1); ``--debug`` prints the traceback inline as well. Library logging (e.g. Optuna's failed-trial
tracebacks) goes to the same file, not the terminal. A full disk, an exceeded quota, a read-only or forbidden
path is a known failure too (exit 2, naming the path). Ctrl-C ends in ``error: interrupted`` (exit 130), SIGTERM
in ``error: terminated`` (exit 143), both after the same clean-up.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from pipelines.commands import common_parser
from pipelines.core.errors import PipelineError, Terminated, disk_error, mask_secrets

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


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (an unknown flag, a value out of range) as one ``error:`` line, exit 2, like
    every other bad input, instead of a usage block; ``--help`` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("python -m pipelines").strip()
        raise PipelineError(f"{command + ': ' if command else ''}{message} (--help lists the flags)")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0])
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


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``timeout``, ``docker stop``, schedulers) raises ``Terminated``, a ``KeyboardInterrupt``, for
    the duration of the command: the clean-up written for Ctrl-C (the writer's staging folder, tune's workers,
    temporary files) runs for it too, where the default action killed the process mid-publish. Only the main
    thread can set a handler (a test or a notebook may call ``main`` from another); the previous one is
    restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def check_finite_flags(args: argparse.Namespace) -> None:
    """Refuse ``nan`` or ``inf`` in any float flag of any command, before its work starts: a backstop for a flag
    whose parser type is a bare ``float`` (``--lr nan`` made a run folder, then failed writing JSON)."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise PipelineError(f"--{name.replace('_', '-')} {value}: expected a finite number")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    handler = log_handler(next((a for a in argv if not a.startswith("-")), "cli"))
    warnings.showwarning = _show_warning
    try:
        with sigterm_as_interrupt():
            args = build_parser(argv).parse_args(argv)  # imports the command: a broken install fails here
            check_finite_flags(args)
            return int(args._module.run(args) or 0)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + signal.SIGTERM.value if terminated else 130  # as a shell reports a signal's death
    except Exception as err:  # noqa: BLE001 - the one place where any failure becomes one line
        if debug:  # the masked traceback inline, for a known failure (PipelineError) or any other
            print(mask_secrets("".join(traceback.format_exception(err))), file=sys.stderr, end="")
        known = err if isinstance(err, PipelineError) else disk_error(err)  # a full disk: no bug, one line
        if known is not None:
            print(f"error: {known}", file=sys.stderr)
            return 2
        print(f"error: {unexpected(err, handler)}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    sys.exit(main())
