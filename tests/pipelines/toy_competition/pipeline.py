"""The toy competition's pipeline and tuning objective, built only on the shared core and the writer."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
from sklearn.linear_model import Ridge

from pipelines.core.cv import cross_validate, make_folds
from pipelines.core.metrics import rmse
from pipelines.core.records import RunRecord
from pipelines.core.tables import read_csv
from pipelines.core.tuning import tuning_param_names
from submissions.writer import SubmissionSpec, write_run

NAME, ID, TARGET, FEATURES = "toy-regression", "Id", "y", ["x1", "x2"]
DATA = Path(__file__).parent / "data"


@dataclass
class ToyConfig:
    alpha: float = 1.0
    folds: int = 3
    seed: int = 0
    data_dir: str | None = None
    out_dir: str = "submissions"
    extra_record: dict = field(default_factory=dict)


def load(data_dir: str | None):
    folder = Path(data_dir) if data_dir else DATA
    return read_csv(folder / "train.csv", required=[ID, *FEATURES, TARGET]), read_csv(folder / "test.csv",
                                                                                     required=[ID, *FEATURES])


def spec(data_dir: str | None) -> SubmissionSpec:
    return SubmissionSpec(NAME, [ID, TARGET], ids=load(data_dir)[1][ID])


def run_config(cfg: ToyConfig, write: bool = True):
    """CV of a ridge regression; writes a run unless ``write`` is false. Returns (CV, written paths or None)."""
    start = time.perf_counter()
    train, test = load(cfg.data_dir)
    x, y, x_test = train[FEATURES].to_numpy(float), train[TARGET].to_numpy(float), test[FEATURES].to_numpy(float)
    folds = make_folds(len(train), cfg.folds, seed=cfg.seed)

    def fit_predict(tr, va, fold):
        model = Ridge(alpha=cfg.alpha).fit(x[tr], y[tr])
        return model.predict(x[va]), model.predict(x_test)

    result = cross_validate(fit_predict, folds, y, rmse)
    if not write:
        return result.mean, None
    record = RunRecord(competition=NAME, preset=f"ridge{cfg.alpha:g}", cv_mean=result.mean, metric="rmse",
                       cv_std=result.std, fold_scores=result.fold_scores, folds={"ids": folds}, seed=cfg.seed,
                       config=asdict(cfg), data_dir=cfg.data_dir, timings={"total_s": time.perf_counter() - start},
                       extra=dict(cfg.extra_record))
    frame = train[[ID]].assign(fold=folds, **{TARGET: y, "prediction": result.oof})
    files = write_run(test[[ID]].assign(**{TARGET: result.test}), spec(cfg.data_dir), out_dir=cfg.out_dir,
                      record=record, oof=frame)
    return result.mean, files


class ToyObjective:
    """``tune toy``: the ridge penalty, on the pipeline's own CV."""

    direction = "minimize"

    def __init__(self, args: argparse.Namespace):
        self.base = ToyConfig(folds=args.folds or 3, seed=args.seed, data_dir=args.data_dir, out_dir=args.out_dir)

    @property
    def setup(self) -> dict:
        return {"competition": NAME, "folds": self.base.folds, "seed": self.base.seed, "data_dir": self.base.data_dir}

    def check_inputs(self, args: argparse.Namespace) -> None:
        load(self.base.data_dir)

    def config(self, trial) -> ToyConfig:
        return replace(self.base, alpha=trial.suggest_float("alpha", 1e-3, 1e3, log=True))

    def defaults(self) -> dict:
        return {name: getattr(self.base, name) for name in tuning_param_names(self.config)}

    def __call__(self, trial: optuna.Trial) -> float:
        return run_config(self.config(trial), write=False)[0]

    def train_best(self, params: dict, extra_record: dict) -> dict:
        cv, files = run_config(replace(self.config(optuna.trial.FixedTrial(params)), extra_record=extra_record))
        return {"cv_mean": cv, "submission": files.submission}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)


def run(args: argparse.Namespace) -> int:
    cv, files = run_config(ToyConfig(alpha=args.alpha, folds=args.folds, seed=args.seed, data_dir=args.data_dir,
                                     out_dir=args.out_dir))
    print(f"toy: CV rmse {cv:.5f}\nsubmission: {files.submission}")
    return 0
