"""What each competition's submission must look like, rebuilt from the data a run used.

``submit`` validates a file again right before sending it (the file may have been edited, or come from
elsewhere), so the spec is rebuilt from the competition's own files, not trusted from the run: the test
ids in order, the training label set, positivity. One entry per competition; add one here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.errors import PipelineError
from pipelines.core.records import REPO_ROOT
from submissions.writer import SubmissionSpec


@dataclass(frozen=True)
class Competition:
    """A competition as this toolkit knows it: folder name, Kaggle slug, metric direction, spec builder."""

    name: str  # the folder under out_dir and the record's "competition"
    kaggle_slug: str
    metric: str
    greater_is_better: bool
    build_spec: Callable[[str | None], SubmissionSpec]  # data dir (None: the default) -> spec
    default_data: Path


def _house_spec(data_dir: str | None) -> SubmissionSpec:
    from pipelines.competitions.house_prices.pipeline import ID, NAME, TARGET, load

    _, test = load(data_dir)
    return SubmissionSpec(NAME, [ID, TARGET], ids=test[ID], positive=True)


def _leaves_spec(data_dir: str | None) -> SubmissionSpec:
    from pipelines.competitions.leaves.pipeline import read_table  # the pipeline's own checks of its CSVs

    folder = Path(data_dir) if data_dir else LEAVES.default_data
    train, test = read_table(folder / "train.csv", ["image", "label"]), read_table(folder / "test.csv", ["image"])
    return SubmissionSpec(LEAVES.name, ["image", "label"], ids=test["image"],
                          labels=set(train["label"].dropna()), numeric=False)


HOUSE = Competition("house-prices", "house-prices-advanced-regression-techniques", "log_rmse", False, _house_spec,
                    REPO_ROOT / "data" / "house-prices")
LEAVES = Competition("classify-leaves", "classify-leaves", "accuracy", True, _leaves_spec,
                     REPO_ROOT / "data" / "classify-leaves")
COMPETITIONS: dict[str, Competition] = {c.name: c for c in (HOUSE, LEAVES)}
ALIASES = {"leaves": "classify-leaves", "house": "house-prices",
           "house-prices-advanced-regression-techniques": "house-prices"}


def get_competition(name: str) -> Competition:
    """The entry for a record's ``competition`` (or a Kaggle slug or short alias)."""
    key = ALIASES.get(name, name)
    if key not in COMPETITIONS:
        raise PipelineError(f"unknown competition {name!r}; known: {', '.join(COMPETITIONS)}")
    return COMPETITIONS[key]


def data_dir_of(record: dict) -> str | None:
    """The data folder a run read: leaves records it under ``data.dir``, house prices under ``config``."""
    data = record.get("data")
    if isinstance(data, dict) and data.get("dir"):
        return str(data["dir"])
    config = record.get("config")
    if isinstance(config, dict) and config.get("data_dir"):
        return str(config["data_dir"])
    return None


def spec_for(record: dict, data_dir: str | None = None) -> SubmissionSpec:
    """The spec for the run ``record`` describes, from ``data_dir`` or the folder the run used."""
    return get_competition(record.get("competition", "")).build_spec(data_dir or data_dir_of(record))


def kaggle_slug(record: dict) -> str:
    """The Kaggle competition to submit to: the record's own ``kaggle_competition`` first."""
    return record.get("kaggle_competition") or get_competition(record.get("competition", "")).kaggle_slug
