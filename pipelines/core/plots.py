"""The one matplotlib setup for every figure file the pipelines draw."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, set here once for every figure the pipelines draw.

    Figures are only ever saved to files (by the writer): Agg needs no display, works in tune's worker
    processes and under ``torchrun``, and never opens a window that would block a run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
