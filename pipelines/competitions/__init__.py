"""The competition registry: one package per competition, each defining ``COMPETITION`` in its ``__init__``.

Competitions are found by listing this package's folders (``pkgutil.iter_modules(__path__)``), so adding a
competition is adding a folder here and nothing else. Each package is built on ``pipelines.core`` and
``submissions`` only: no competition imports another one, a command, or this registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from pipelines.core.competition import Competition
from pipelines.core.errors import PipelineError

__all__ = ["Competition", "get_competition", "list_competitions"]


def list_competitions() -> list[Competition]:
    """Every registered competition, in the order of their folder names."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        competition = getattr(module, "COMPETITION", None)
        if not isinstance(competition, Competition):
            raise PipelineError(f"{module.__name__}: a competition package must define COMPETITION = Competition(...)")
        found.append(competition)
    return found


def get_competition(name: str) -> Competition:
    """The competition a record, a flag or a user names: its name, command, Kaggle slug or an alias."""
    competitions = list_competitions()
    for competition in competitions:
        if name in competition.names:
            return competition
    raise PipelineError(f"unknown competition {name!r}; known: {', '.join(c.name for c in competitions)}")
