"""House Prices tuning: the objective ``tune house-prices`` runs, over the zoo's ``SEARCH_SPACES``.

The search spaces live beside the models they tune (``estimators.py``); this file turns a trial into a
``HousePricesConfig`` and reports the pipeline's own CV, fold by fold, to the pruner.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import optuna

from pipelines.core.tuning import tuning_param_names

_FEATURE_CACHES: dict[tuple, dict] = {}


class HousePricesObjective:
    """Tunes every selected strong model's parameters in one trial; the value is the stack's CV.

    One trial covers all models because the score that matters (and that ``--best`` reproduces) is the
    stack's cross-fitted CV on every training row, the preset's own headline. Pruning steps are (model,
    fold) in a fixed order, so every trial reports the same model's running CV at the same step and the
    pruner compares like with like.
    """

    direction = "minimize"

    def __init__(self, args: argparse.Namespace):
        from pipelines.competitions.house_prices.estimators import SEARCH_SPACES, model_names
        from pipelines.competitions.house_prices.pipeline import HousePricesConfig
        from pipelines.core.errors import PipelineError

        models = model_names(args.models.split(",") if args.models else None)
        if untunable := [m for m in models if m not in SEARCH_SPACES]:
            raise PipelineError(f"no search space for {', '.join(untunable)}: tune {', '.join(SEARCH_SPACES)}")
        self.base = HousePricesConfig(preset="strong", folds=args.folds or 5, seed=args.seed, data_dir=args.data_dir,
                                      out_dir=args.out_dir, models=models, progress=False)
        # per-fold preprocessing depends only on data and folds: shared by every trial (and study) in a process
        self.feature_cache = _FEATURE_CACHES.setdefault((args.data_dir, self.base.folds, self.base.repeats,
                                                         args.seed), {})

    def check_inputs(self, args: argparse.Namespace) -> None:
        """The data, read with the pipeline's own checks, and enough rows for the folds."""
        from pipelines.competitions.house_prices.pipeline import load
        from pipelines.core.cv import make_folds

        train, _ = load(args.data_dir)
        make_folds(len(train), args.folds or 5)  # refuses too few rows for the folds

    @property
    def setup(self) -> dict:
        """What makes two trials comparable: a study refuses to mix trials from different setups."""
        from pipelines.competitions.house_prices.pipeline import outlier_policy

        return {"competition": "house-prices", "folds": self.base.folds, "repeats": self.base.repeats,
                "seed": self.base.seed, "models": self.base.models, "data_dir": self.base.data_dir,
                "scored": "all rows", "outliers": outlier_policy(self.base)}

    def config(self, trial: optuna.Trial | optuna.trial.FixedTrial):
        from pipelines.competitions.house_prices.estimators import SEARCH_SPACES

        return replace(self.base, params={name: SEARCH_SPACES[name](trial) for name in self.base.models})

    def defaults(self) -> dict:
        """The preset's own parameters in the search space's names: trial 0, so the study starts from them."""
        from pipelines.competitions.house_prices.estimators import STRONG_MODELS

        names = tuning_param_names(self.config)
        return {n: STRONG_MODELS[n.split(".")[0]][1][n.split(".", 1)[1]] for n in names
                if n.split(".", 1)[1] in STRONG_MODELS[n.split(".")[0]][1]}

    def __call__(self, trial: optuna.Trial) -> float:
        from pipelines.competitions.house_prices.pipeline import run_pipeline

        cfg = replace(self.config(trial), test_pred="average")  # the CV is the same; skip the refit
        step = {name: i * cfg.folds * cfg.repeats for i, name in enumerate(cfg.models)}

        def on_fold_end(name: str, fold: int, running_cv: float) -> None:
            trial.report(running_cv, step[name] + fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{name} fold {fold}: running CV {running_cv:.5f}")

        out = run_pipeline(cfg, write=False, on_fold_end=on_fold_end, feature_cache=self.feature_cache)
        trial.set_user_attr("models", {n: round(m["cv_mean"], 6) for n, m in out["models"].items()})
        trial.set_user_attr("weights", {n: round(m["weight"], 4) for n, m in out["models"].items()})
        return out["cv_mean"]

    def train_best(self, params: dict, extra_record: dict) -> dict:
        from pipelines.competitions.house_prices.pipeline import run_pipeline

        cfg = replace(self.config(optuna.trial.FixedTrial(params)), progress=True, extra_record=extra_record)
        out = run_pipeline(cfg)
        return {"cv_mean": out["cv_mean"], "submission": out["files"].submission}
