"""Tuning benchmarks: pruning vs no pruning, the tuned study vs the default preset, 1 vs 2 workers.

``pruning``: two house-prices studies with the same sampler seed and the same N trials, one with the
median pruner and one without, run *interleaved trial by trial* in one process (other jobs share the
CPUs, so back-to-back runs would see different loads). The per-fold features are cached before timing,
so both studies pay only model fitting. Reports wall time of each, the ratio, and both best CVs; the
pruned study's best is also the "N-trial study vs the default preset" figure (trial 0 is the defaults).

``workers``: the same small study (cheap models) with ``--workers 1`` and ``--workers 2`` on the
storage given (a PostgreSQL URL from ``make postgres``), timing the CLI end to end and counting the
trials each worker process ran.

    python benchmarks/tune_pruning.py pruning --trials 30
    python benchmarks/tune_pruning.py workers --storage postgresql://optuna@127.0.0.1:55432/optuna
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.competitions.house_prices.objective import HousePricesObjective  # noqa: E402
from pipelines.core import tuning  # noqa: E402


def pruning(trials: int, folds: int, seed: int, models: str | None) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = argparse.Namespace(models=models, folds=folds, seed=seed, data_dir=None, out_dir="/tmp")
    objective = HousePricesObjective(args)
    warm = optuna.create_study()
    warm.enqueue_trial(objective.defaults())
    t0 = time.perf_counter()
    warm.optimize(objective, n_trials=1)  # fills the feature cache; this is also the default preset's CV
    default_cv, warm_s = warm.best_value, time.perf_counter() - t0
    studies, seconds = {}, {}
    for name in ("median", "none"):
        study = optuna.create_study(direction="minimize", pruner=tuning.make_pruner(name),
                                    sampler=tuning.make_sampler(seed, 0, 0))
        study.enqueue_trial(objective.defaults())
        studies[name], seconds[name] = study, 0.0
    for i in range(trials):
        for name, study in studies.items():
            start = time.perf_counter()
            tuning.run_worker(study, objective, i + 1)
            seconds[name] += time.perf_counter() - start
        print(f"trial {i + 1}/{trials}: " + ", ".join(
            f"{n} best {s.best_value:.5f} ({seconds[n]:.0f}s)" for n, s in studies.items()), flush=True)
    pruned = studies["median"]
    return {
        "trials": trials, "folds": folds, "models": models or "all", "seed": seed,
        "default_preset_cv": default_cv, "warmup_seconds": warm_s,
        "pruned": {"seconds": seconds["median"], "best": pruned.best_value,
                   "n_pruned": tuning.count(pruned, (optuna.trial.TrialState.PRUNED,)),
                   "best_params": pruned.best_params},
        "unpruned": {"seconds": seconds["none"], "best": studies["none"].best_value,
                     "best_params": studies["none"].best_params},
        "wall_time_ratio_pruned_over_unpruned": seconds["median"] / seconds["none"],
        "best_cv_difference_pruned_minus_unpruned": pruned.best_value - studies["none"].best_value,
        "improvement_over_default": default_cv - min(pruned.best_value, studies["none"].best_value),
    }


def workers(storage: str, trials: int, models: str) -> dict:
    out = {}
    for k in (1, 2):
        study = f"bench-workers{k}-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "-m", "pipelines", "tune", "house-prices", "--trials", str(trials), "--workers",
                str(k), "--study", study, "--storage", storage, "--models", models, "--folds", "5", "--no-plots",
                "--quiet"]
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        s = optuna.load_study(study_name=study, storage=storage)
        done = s.get_trials(states=tuning.COUNTED)
        per_worker = collections.Counter(t.user_attrs.get("worker") for t in done)
        out[f"workers{k}"] = {"seconds": wall, "finished": len(done), "all_trials": len(s.trials),
                              "trials_per_worker": sorted(per_worker.values()), "best": s.best_value}
        print(f"{k} worker(s): {out[f'workers{k}']}", flush=True)
    out["speedup"] = out["workers1"]["seconds"] / out["workers2"]["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("pruning", "workers"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=None)
    parser.add_argument("--storage", default=None)
    args = parser.parse_args()
    if args.part == "pruning":
        result = pruning(args.trials, args.folds, args.seed, args.models)
    else:
        result = workers(args.storage, args.trials, args.models or "lasso,enet,ridge")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
