"""A throwaway toy competition (ridge regression on two columns, Kaggle layout), registered by this file alone.

``tests/pipelines/test_registry.py`` copies this folder next to the real competitions (on the registry's
search path) and runs every generic command on it: nothing else in the repository knows it exists.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.core.competition import BlendSpec, Competition


def _spec(data_dir: str | None):
    from pipelines.competitions.toy_competition.pipeline import spec

    return spec(data_dir)


def _objective(args):
    from pipelines.competitions.toy_competition.pipeline import ToyObjective

    return ToyObjective(args)


COMPETITION = Competition(
    name="toy-regression",
    command="toy",
    help="a toy regression (tests only)",
    module="pipelines.competitions.toy_competition.pipeline",
    kaggle_slug="toy-regression-kaggle",
    metric="rmse",
    greater_is_better=False,
    default_data=Path(__file__).parent / "data",
    build_spec=_spec,
    make_objective=_objective,
    blend=BlendSpec(id_column="Id", target="y"),
)
