"""``--time-limit``: a wall-clock budget that stops a run from adding models once the next would overrun it.

A run fits its models in order, the most useful first. Every model after the first is watched fold by fold:
from its own mean time per fit it projects when it would finish, and if that lies past the deadline it is
dropped there (``OverBudget``), named with its projection, and the run goes on with the models it has.
The first model is always fitted: a run needs one. Projections come from the model's own folds on this
machine, not from figures measured elsewhere, so the budget holds on a slow CPU as on a fast one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["OverBudget", "TimeBudget"]


class OverBudget(Exception):  # noqa: N818 - a control-flow signal, like optuna's TrialPruned
    """The model being fitted would end past the deadline."""


@dataclass
class TimeBudget:
    """``seconds`` from ``start`` (``None``: no limit); ``skipped`` maps each dropped model to the reason."""

    seconds: float | None
    start: float = field(default_factory=lambda: time.perf_counter())
    skipped: dict[str, str] = field(default_factory=dict)

    def left(self) -> float:
        """Seconds before the deadline (infinite without a limit)."""
        return float("inf") if self.seconds is None else self.seconds - (time.perf_counter() - self.start)

    def admit(self, name: str, first: bool) -> bool:
        """May ``name`` start? Not once the deadline has passed (the first model always may); records why not."""
        if first or self.left() > 0:
            return True
        self.skipped[name] = f"not started: the {self.seconds:g} s limit was spent"
        return False

    def check(self, name: str, fits_done: int, fits_total: int, model_start: float, first: bool) -> None:
        """Raise ``OverBudget`` (and record why) if ``name``, at its mean time per fit so far, would end past the
        deadline; never for the first model."""
        if first or self.seconds is None:
            return
        per_fit = (time.perf_counter() - model_start) / fits_done
        needed = per_fit * (fits_total - fits_done)
        if needed > self.left():
            self.skipped[name] = (f"stopped after {fits_done} of {fits_total} fits: {per_fit:.1f} s each, "
                                  f"{needed:.0f} s more needed, {max(self.left(), 0):.0f} s left")
            raise OverBudget(name)
