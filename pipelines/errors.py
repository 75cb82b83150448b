"""The one exception type a user sees: its message is printed as a single line, with no traceback."""


class PipelineError(Exception):
    """Bad input or a refused action. The CLI prints ``error: <message>`` and exits with status 2."""

    def __str__(self) -> str:  # keep it to one line whatever the caller passed
        return " ".join(super().__str__().split())
