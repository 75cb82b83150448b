"""``python -m pipelines blend RUN_A RUN_B ...``: blend finished runs on their out-of-fold predictions.

How runs blend is the competition's ``BlendSpec`` (registry). ``kind="regression"``: weights are
non-negative and sum to one (``pipelines.core.blending.fit_simplex_weights``), fitted in the metric's space:
for house prices on log predictions against log price (minimising the spec's ``fit_loss``: a Huber loss for house
prices, as its own stack does), so the blend is a weighted geometric mean of the
runs' prices. The blend's CV is cross-fitted: the weights scored
on fold k never saw fold k, and neither did the model weights inside a run that itself blended several
models (those are refitted from its per-model OOF columns, ``nested_cross_fitted_scores``). Every input
is rescored the same way on every training row, so the numbers side by side are comparable even with
older runs whose records left the two outliers out of scoring (their OOF files' ``scored`` column).

``kind="probabilities"`` (leaves) blends on their class probabilities: the weights minimise the out-of-fold log-loss
(smooth, unlike accuracy), the blended test probabilities' argmax is the submission, and the cross-fitted
CV is reported as accuracy (the competition's metric) and log-loss, for every input and for the blend.

``--weights equal`` (either kind) fits nothing: every run weighs 1/n, the blend's OOF and test predictions are
the plain mean of the runs' (in the metric's space), so its CV needs no cross-fitting. With the default
``--weights fit`` the table also shows equal weights' CV on the same folds, so one sees whether fitting paid
(on ELPV and the synthetic leaves set equal weights had the better accuracy, inside the noise, README).

Runs must share the competition, the training ids, the fold of every row and the test set (leaves: also
the test ids and the class list); anything else is refused with one line.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.commands.runs import Run, find_run, models_label
from pipelines.competitions import get_competition
from pipelines.core import blending, metrics, tracking
from pipelines.core.competition import BlendSpec
from pipelines.core.errors import PipelineError
from pipelines.core.records import RunRecord
from pipelines.core.tables import read_csv

if TYPE_CHECKING:
    from submissions.writer import RunFiles


def _read(path, what: str, required=(), numeric=(), dtype=None, to_space=None) -> pd.DataFrame:
    """A run's table, or one error naming it: missing, not a CSV, lacking a ``required`` column, or a ``numeric``
    column (``p_*``: every column of that prefix) holding text, a blank or (in the metric's space, ``to_space``:
    log for prices) a non-finite value."""
    if path is None or not path.is_file():
        raise PipelineError(f"{what} missing: {path}")
    frame = read_csv(path, [*required, *(c for c in numeric if not c.endswith("*"))], dtype)
    for column in [c for c in frame.columns if any(c == n or n.endswith("*") and c.startswith(n[:-1])
                                                    for n in numeric)]:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        if to_space is not None:
            with np.errstate(all="ignore"):
                values = to_space(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise PipelineError(f"{path}: column {column!r} has {frame[column].iloc[bad[0]]!r} on line {bad[0] + 2}, "
                                "not a usable number")
    return frame


def every_or_error(items: list, read: Callable, what: str) -> list:
    """``read(item)`` for every item; the items that fail are all named in one error line: the user named each
    run to blend, so a blend of the others would not be the one asked for."""
    out, bad = [], []
    for item in items:
        try:
            out.append(read(item))
        except PipelineError as err:
            bad.append(str(err))
    if bad:
        raise PipelineError(f"cannot blend {len(bad)} of {what}: {'; '.join(bad)}")
    return out


def read_all(runs: list[Run], what: str, path_of: Callable[[Run], Path | None], **kwargs) -> list[pd.DataFrame]:
    """Every run's table (``_read``), every bad one named in one error line."""
    return every_or_error(runs, lambda r: _read(path_of(r), f"{r.stem}: {what}", **kwargs), "the runs")


def check_compatible(runs: list[Run]) -> None:
    """Refuse runs that cannot be blended: fewer than two, repeated, mixed competitions, different folds."""
    if len(runs) < 2:
        raise PipelineError("blend needs at least two runs")
    stems = [r.stem for r in runs]
    if len(set(stems)) < len(stems):
        raise PipelineError(f"run {next(s for s in stems if stems.count(s) > 1)} is given twice")
    competitions = {r.competition for r in runs}
    if len(competitions) > 1:
        raise PipelineError(f"runs from different competitions: {', '.join(sorted(competitions))}")
    if not get_competition(runs[0].competition).blendable:
        raise PipelineError(f"{runs[0].competition} runs cannot be blended: they do not save what a blended "
                            "submission needs")
    check_same_test_set(runs)
    first = runs[0].fold_ids
    for r in runs[1:]:
        ids = r.fold_ids
        if ids is None or first is None or list(ids) != list(first):
            n = sum(a != b for a, b in zip(first or [], ids or [], strict=False))
            detail = f"{n} rows in another fold" if ids and first and len(ids) == len(first) else "different rows"
            raise PipelineError(f"fold ids differ between {runs[0].stem} and {r.stem} ({detail}): "
                                "rerun with the same --folds and --seed")


def test_set(run: Run) -> tuple[Path, str | None]:
    """The folder a run read its test set from, and the MD5 of that ``test.csv`` now (``None``: gone)."""
    from pipelines.core.files import md5

    folder = run.record.data_dir
    root = Path(folder) if folder else get_competition(run.competition).default_data
    test = root / "test.csv"
    return root.resolve(), (md5(test) if test.is_file() else None)


def check_same_test_set(runs: list[Run]) -> None:
    """Refuse runs made on different test sets: their submissions predict different houses (or the same ids
    with other features), so a weighted mean of them is no submission. Two folders holding byte-identical
    ``test.csv`` files are the same test set."""
    first, first_md5 = test_set(runs[0])
    for r in runs[1:]:
        root, digest = test_set(r)
        if root != first and (digest is None or digest != first_md5):
            raise PipelineError(f"runs were made on different test sets: {runs[0].stem} on {first}/test.csv, "
                                f"{r.stem} on {root}/test.csv" + ("" if digest else " (missing now)"))


def space_columns(frame: pd.DataFrame, columns: list[str], spec: BlendSpec) -> np.ndarray:
    """The columns mapped into the metric's space (house prices: log price)."""
    return np.column_stack([spec.to_space(frame[c].to_numpy(float)) for c in columns])


def base_columns(oof: pd.DataFrame, spec: BlendSpec) -> tuple[np.ndarray, list[str]]:
    """A run's honest out-of-fold building blocks, in the metric's space, and their model names.

    A run that stacked several models is rescored from its per-model ``oof_*`` columns, so that its stack
    weights (and guard) are refitted inside every fold of the blend's own CV; a single-model run's
    ``prediction`` is its one column.
    """
    columns = [c for c in oof.columns if c.startswith("oof_")]
    columns = columns if len(columns) > 1 else ["prediction"]
    return space_columns(oof, columns, spec), [c.removeprefix("oof_") for c in columns]


def recorded_cv(run: Run) -> float | None:
    """The CV a run's record states, ``None`` for an older record that states none (a NaN would make the blend's
    own record unsavable: records hold finite numbers only)."""
    return run.cv_mean if math.isfinite(run.cv_mean) else None


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


WEIGHTS = ("fit", "equal")  # ``--weights``: fitted on out-of-fold predictions, or 1/n (nothing fitted)


def blend_weights(mode: str, preds: np.ndarray, y: np.ndarray, loss=metrics.rmse) -> np.ndarray:
    """The blend's weights on every row: ``fit`` minimises ``loss`` on the simplex, ``equal`` is 1/n."""
    n = preds.shape[1]
    return blending.fit_simplex_weights(preds, y, loss) if mode == "fit" else np.full(n, 1.0 / n)


def nested_cross_fitted_scores(bases: list[np.ndarray], y: np.ndarray, folds: np.ndarray,
                               mask: np.ndarray, mode: str = "fit", fit_loss=None,
                               combines: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None,
                               ) -> list[float]:
    """Per-fold score of the blend where neither the runs' own model weights nor the blend's saw that fold.

    ``cross_fitted_scores`` one level deeper: for each held-out fold, every run's inner weights are refitted
    on the other folds from its base columns, then the blend's weights on the same rows (``mode="equal"``:
    1/n, nothing to fit; a multi-model run's inner weights are still refitted). Weights minimise ``fit_loss``
    (default: RMSE), scores are RMSE. ``combines[i](columns, weights)`` makes run i's prediction from its
    base columns (default: the weighted mean; house prices: the stack with its extrapolation guard).
    """
    fit_loss = fit_loss or metrics.rmse
    combines = combines or [blending.blend] * len(bases)
    scores = []
    for k in np.unique(folds):
        fit_rows, score_rows = (folds != k) & mask, (folds == k) & mask
        runs = np.column_stack([combine(b, blending.fit_simplex_weights(b[fit_rows], y[fit_rows], fit_loss))
                                for b, combine in zip(bases, combines, strict=True)])
        w = blend_weights(mode, runs[fit_rows], y[fit_rows], fit_loss)
        scores.append(metrics.rmse(y[score_rows], blending.blend(runs[score_rows], w)))
    return scores


def blend_regression(runs: list[Run], spec: BlendSpec, mode: str = "fit") -> dict:
    """Fit (``mode="fit"``) or average (``"equal"``), score and build everything a blended regression run
    writes, in ``spec``'s space (house prices: log price). Nothing is written here."""
    ID, TARGET = spec.id_column, spec.target  # noqa: N806 - the competition's column names

    oofs = read_all(runs, "out-of-fold file", lambda r: r.oof, required=[ID, "fold"],
                    numeric=[TARGET, "prediction", "oof_*"], to_space=spec.to_space)
    subs = read_all(runs, "submission", lambda r: r.submission, required=[ID], numeric=[TARGET],
                    to_space=spec.to_space)
    base = oofs[0]
    for r, oof, sub in zip(runs[1:], oofs[1:], subs[1:], strict=True):
        if not oof[ID].equals(base[ID]) or not oof["fold"].equals(base["fold"]):
            raise PipelineError(f"out-of-fold rows or folds differ between {runs[0].stem} and {r.stem}")
        if not sub[ID].equals(subs[0][ID]):
            raise PipelineError(f"submission ids differ between {runs[0].stem} and {r.stem}")
    folds = base["fold"].to_numpy()
    if not np.array_equal(folds, np.asarray(runs[0].fold_ids)):
        raise PipelineError(f"{runs[0].stem}: the OOF file's folds differ from its record's")
    price = base[TARGET].to_numpy(float)
    scored = np.ones(len(base), bool)  # every row, whatever an older run's ``scored`` column says
    log_y = spec.to_space(price)  # "log_": in the metric's space, log price for house prices
    log_oof = np.column_stack([space_columns(o, ["prediction"], spec) for o in oofs])  # what the test side matches
    log_test = np.column_stack([space_columns(s, [TARGET], spec) for s in subs])
    bases, names = zip(*(base_columns(o, spec) for o in oofs), strict=True)
    combines = [blending.blend if spec.combine is None else (lambda p, w, n=n: spec.combine(p, w, n)) for n in names]

    inputs = []
    for r, b, combine in zip(runs, bases, combines, strict=True):  # each run rescored as it scored itself
        scores = (blending.cross_fitted_scores(b, log_y, folds, mask=scored, fit_loss=spec.fit_loss, combine=combine)
                  if b.shape[1] > 1 else metrics.fold_scores(log_y, b[:, 0], folds, mask=scored))
        inputs.append({"run": r.stem, "record": r.path.name, "preset": r.record.preset,
                       "models": models_label(r.record),
                       "recorded_cv": recorded_cv(r), "cv_mean": float(np.mean(scores)),
                       "cv_std": float(np.std(scores)),
                       "fold_scores": scores})
    weights = blend_weights(mode, log_oof[scored], log_y[scored], spec.fit_loss or metrics.rmse)

    def blended(preds: np.ndarray) -> np.ndarray:  # equal: exactly the mean, in the metric's space
        return preds.mean(1) if mode == "equal" else blending.blend(preds, weights)

    blend_scores = nested_cross_fitted_scores(bases, log_y, folds, scored, mode, spec.fit_loss, combines)
    blend_oof = spec.from_space(blended(log_oof))
    for info, w in zip(inputs, weights, strict=True):
        info["weight"] = float(w)
    equal = (nested_cross_fitted_scores(bases, log_y, folds, scored, "equal", spec.fit_loss, combines)
             if mode == "fit" else blend_scores)
    return {
        "mode": mode,
        "weights": weights,
        "inputs": inputs,
        "fold_scores": blend_scores,
        "cv_mean": float(np.mean(blend_scores)),
        "cv_std": float(np.std(blend_scores)),
        "equal": {"cv_mean": float(np.mean(equal)), "cv_std": float(np.std(equal)), "fold_scores": equal},
        "cv_all_rows": metrics.rmse(log_y, spec.to_space(blend_oof)),
        "scored_rows": int(scored.sum()),
        "submission": pd.DataFrame({ID: subs[0][ID].to_numpy(), TARGET: spec.from_space(blended(log_test))}),
        "oof": pd.DataFrame({ID: base[ID], "fold": folds, TARGET: price, "prediction": blend_oof, "scored": scored,
                             **{f"oof_{r.stem}": spec.from_space(log_oof[:, i]) for i, r in enumerate(runs)}}),
    }


def check_leaves_compatible(runs: list[Run]) -> None:
    """Leaves runs blend only with every fold trained and the same class list (the probability columns)."""
    classes = runs[0].record.extra.get("classes")
    if not isinstance(classes, list) or not classes:
        raise PipelineError(f"{runs[0].stem}: its record has no class list (classes), so its probabilities "
                            "cannot be read")
    for r in runs:
        trained, folds = r.record.extra.get("trained_folds"), r.fold_ids or []
        if trained is not None and sorted(trained) != sorted(set(folds)):
            raise PipelineError(f"{r.stem} trained only folds {trained} of {len(set(folds))}: a blend needs every "
                                "training row's out-of-fold probabilities (rerun without --fold)")
        if r.record.extra.get("classes") != classes:
            other = r.record.extra.get("classes") or []
            raise PipelineError(f"class lists differ between {runs[0].stem} ({len(classes or [])} classes) and "
                                f"{r.stem} ({len(other)} classes): they were trained on different labels")


def blend_leaves(runs: list[Run], mode: str = "fit") -> dict:
    """Fit, score and build everything a blended leaves run writes. Nothing is written here.

    ``mode="fit"``: weights are fitted on the runs' out-of-fold probabilities by log-loss, and the blend's CV
    is cross-fitted (``blending.cross_fitted_blend``): fold k's rows are blended with weights fitted on the
    other folds. ``mode="equal"``: the probabilities' plain mean, nothing fitted, nothing to cross-fit.
    """
    check_leaves_compatible(runs)
    text = {"image": str, "label": str, "pred": str}
    classes = runs[0].record.extra["classes"]
    columns = [f"p_{c}" for c in classes]
    oofs = read_all(runs, "out-of-fold file", lambda r: r.oof, required=["image", "fold", "label"],
                    numeric=columns, dtype=text)
    tests = read_all(runs, "test probabilities (runs made before leaves saved them cannot be blended; rerun it)",
                     lambda r: r.table("test_probs"), required=["image"], numeric=columns, dtype=text)
    base = oofs[0]
    for r, oof, test in zip(runs, oofs, tests, strict=True):
        if not oof["image"].equals(base["image"]) or not oof["label"].equals(base["label"]):
            raise PipelineError(f"training ids differ between {runs[0].stem} and {r.stem}: "
                                "they were trained on different images")
        if not oof["fold"].equals(base["fold"]):
            raise PipelineError(f"out-of-fold folds differ between {runs[0].stem} and {r.stem}")
        if not test["image"].equals(tests[0]["image"]):
            raise PipelineError(f"test ids differ between {runs[0].stem} and {r.stem}: "
                                "their test probabilities are for different images")
    folds = base["fold"].to_numpy()
    if not np.array_equal(folds, np.asarray(runs[0].fold_ids)):
        raise PipelineError(f"{runs[0].stem}: the OOF file's folds differ from its record's")
    unknown = sorted(set(base["label"]) - set(classes))
    if unknown:
        raise PipelineError(f"{runs[0].stem}: its out-of-fold label {unknown[0]!r} is not in its record's classes")
    y = np.searchsorted(classes, base["label"].to_numpy())
    oof_probs = np.stack([o[columns].to_numpy(float) for o in oofs], axis=1)  # (rows, runs, classes)
    test_probs = np.stack([t[columns].to_numpy(float) for t in tests], axis=1)

    def scored(probs: np.ndarray) -> dict:
        acc = [metrics.accuracy(y[folds == k], probs[folds == k]) for k in np.unique(folds)]
        loss = [metrics.log_loss(y[folds == k], probs[folds == k]) for k in np.unique(folds)]
        return {"cv_mean": float(np.mean(acc)), "cv_std": float(np.std(acc)), "fold_scores": acc,
                "log_loss": float(np.mean(loss)), "log_loss_std": float(np.std(loss)), "fold_log_loss": loss}

    weights = blend_weights(mode, oof_probs, y, metrics.log_loss)
    equal_oof = oof_probs.mean(1)  # equal weights' OOF: exactly the mean
    if mode == "equal":
        blend_oof, fold_weights = equal_oof, {int(k): weights for k in np.unique(folds)}
        blend_test = test_probs.mean(1)
    else:
        blend_oof, fold_weights = blending.cross_fitted_blend(oof_probs, y, folds, metrics.log_loss)
        blend_test = blending.blend(test_probs, weights)
    inputs = [{"run": r.stem, "record": r.path.name, "preset": r.record.preset,
               "models": models_label(r.record), "recorded_cv": recorded_cv(r), **scored(oof_probs[:, i]),
               "weight": float(w)} for i, (r, w) in enumerate(zip(runs, weights, strict=True))]
    labels = np.asarray(classes)
    oof = pd.DataFrame({"image": base["image"], "fold": folds, "label": base["label"],
                        "pred": labels[blend_oof.argmax(1)]})
    return {
        "mode": mode,
        "weights": weights,
        "fold_weights": fold_weights,
        "inputs": inputs,
        **scored(blend_oof),
        "equal": scored(equal_oof),
        "classes": classes,
        "submission": pd.DataFrame({"image": tests[0]["image"], "label": labels[blend_test.argmax(1)]}),
        "oof": pd.concat([oof, pd.DataFrame(blend_oof, columns=columns)], axis=1),
        "test_probs": pd.concat([tests[0][["image"]], pd.DataFrame(blend_test, columns=columns)], axis=1),
    }


def write_leaves_blend(runs: list[Run], out: dict, out_dir: str, seed: int, seconds: float):
    """Write a leaves blend as a run of its own (preset ``blend``): submission, record, cross-fitted OOF
    probabilities and the blended test probabilities (so the blend is itself a leaves run)."""
    first = runs[0].record
    names = [r.stem for r in runs]
    extra = {
        "data": first.extra.get("data"),
        "classes": out["classes"],
        "log_loss": {"cv_mean": out["log_loss"], "cv_std": out["log_loss_std"], "fold_scores": out["fold_log_loss"]},
        "cv_rule": CV_RULES[out["mode"]],
        "inputs": out["inputs"],
        "blend_weights": {i["run"]: i["weight"] for i in out["inputs"]},
        "fold_weights": {k: dict(zip(names, map(float, w), strict=True)) for k, w in out["fold_weights"].items()},
        "trained_folds": sorted(set(first.fold_ids)),
        **equal_comparison(out),
    }
    config = {"preset": "blend", "inputs": names, "weights": out["mode"], "seed": seed,
              **({"weights_fitted_on": "out-of-fold log-loss"} if out["mode"] == "fit" else {})}
    return write_blend_run(runs, out, out_dir, seed, seconds, config=config, extra=extra,
                           tables={"test_probs": out["test_probs"]})


CV_RULES = {  # the record's ``cv_rule``, by --weights
    "fit": "cross-fitted: fold k's rows are blended with weights fitted on the other folds' rows only",
    "equal": "equal weights (1/n), nothing fitted: the blend's OOF is the mean of the inputs' OOF, "
             "so its CV needs no cross-fitting",
}


def equal_comparison(out: dict) -> dict:
    """A fitted blend's record also keeps equal weights' CV on the same folds (``equal_weights``)."""
    return {"equal_weights": out["equal"]} if out["mode"] == "fit" else {}


def write_blend(runs: list[Run], out: dict, out_dir: str, seed: int, seconds: float):
    """Write a regression blend as a run of its own (preset ``blend``)."""
    first = runs[0].record
    extra = {
        "cv_all_rows": out["cv_all_rows"],
        "scored_rows": out["scored_rows"],
        "inputs": out["inputs"],
        "blend_weights": {i["run"]: i["weight"] for i in out["inputs"]},
        "models": {i["run"]: {k: i[k] for k in ("cv_mean", "cv_std", "fold_scores", "weight", "recorded_cv")}
                   for i in out["inputs"]},
        "cv_rule": CV_RULES[out["mode"]],
        **equal_comparison(out),
    }
    config = {"preset": "blend", "inputs": [r.stem for r in runs], "data_dir": first.data_dir,
              "space": get_competition(runs[0].competition).blend.space, "weights": out["mode"], "seed": seed}
    return write_blend_run(runs, out, out_dir, seed, seconds, config=config, extra=extra)


def write_blend_run(runs: list[Run], out: dict, out_dir: str, seed: int, seconds: float, *, config: dict,
                    extra: dict, tables: dict | None = None):
    """The record every blend shares (its inputs' folds, data and competition), written by the shared writer."""
    from submissions.writer import write_run

    first = runs[0].record
    competition = get_competition(runs[0].competition)
    record = RunRecord(
        competition=competition.name, preset="blend", cv_mean=out["cv_mean"], metric=competition.metric,
        cv_std=out["cv_std"], fold_scores=out["fold_scores"], folds=first.folds, seed=seed, config=config,
        data_dir=first.data_dir, kaggle_competition=first.kaggle_competition or competition.kaggle_slug,
        timings={"total_s": seconds}, extra=extra,
    )
    spec = competition.build_spec(first.data_dir)
    return write_run(out["submission"], spec, out_dir=out_dir, record=record, oof=out["oof"], tables=tables)

# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="a run's record, submission or OOF file, or its stem (a unique prefix will do)")
    parser.add_argument("--weights", choices=WEIGHTS, default="fit",
                        help="fit: non-negative weights summing to one, fitted on the out-of-fold predictions, "
                             "cross-fitted CV (default); equal: 1/n, nothing fitted, the plain mean")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from submissions.writer import check_writable_dir

    runs = every_or_error(args.runs, lambda ref: find_run(ref, args.out_dir), "the runs named")
    check_compatible(runs)
    check_writable_dir(Path(args.out_dir) / runs[0].competition)  # before the blending work, not after
    files = BLENDERS[get_competition(runs[0].competition).blend.kind](runs, args, start)
    print(f"submission: {files.submission}")
    tracking.mirror_run(args, files)  # --mlflow: after the files are written
    return 0


def run_regression(runs: list[Run], args: argparse.Namespace, start: float) -> RunFiles:
    """Blend regression runs, print every input's CV beside the blend's (and, under ``fit``, equal weights'),
    write the blend."""
    competition = get_competition(runs[0].competition)
    out = blend_regression(runs, competition.blend, args.weights)
    metric = competition.metric
    label = BLEND_LABELS[args.weights]
    width = max(len(label), len(EQUAL_LABEL), *(len(r.stem) for r in runs))
    spec = competition.blend
    print("weights: " + weights_help(args.weights, spec.fit_loss_name
                                     + (f" of {spec.space}" if spec.space != "identity" else "")))
    print(f"{'run':<{width}}  weight  CV {metric} on the same {out['scored_rows']} rows (recorded)")
    for info in out["inputs"]:
        print(f"{info['run']:<{width}}  {info['weight']:.3f}   {info['cv_mean']:.5f} ± {info['cv_std']:.5f}"
              f"  ({_num(info['recorded_cv'], 5)})")
    best = min(i["cv_mean"] for i in out["inputs"])
    print(f"{label:<{width}}  1.000   {out['cv_mean']:.5f} ± {out['cv_std']:.5f}"
          f"  ({out['cv_mean'] - best:+.5f} vs the best input)")
    if args.weights == "fit":
        equal = out["equal"]
        print(f"{EQUAL_LABEL:<{width}}  {1 / len(runs):.3f}   {equal['cv_mean']:.5f} ± {equal['cv_std']:.5f}"
              f"  ({equal['cv_mean'] - out['cv_mean']:+.5f} vs the fitted blend)")
    if out["cv_mean"] > best:
        best_run = min(out["inputs"], key=lambda i: i["cv_mean"])["run"]
        print(f"note: the blend does not beat {best_run} on CV; submitting that run is as good")
    return write_blend(runs, out, args.out_dir, args.seed, time.perf_counter() - start)


def run_leaves(runs: list[Run], args: argparse.Namespace, start: float) -> RunFiles:
    """Blend leaves runs, print every input's CV beside the blend's (and, under ``fit``, equal weights'),
    write the blend."""
    out = blend_leaves(runs, args.weights)
    label = BLEND_LABELS[args.weights]
    width = max(len(label), len(EQUAL_LABEL), *(len(r.stem) for r in runs))
    print(f"out-of-fold CV on the same {len(out['oof'])} training images, {len(out['fold_scores'])} folds; "
          f"weights: {weights_help(args.weights, 'log-loss')}")
    print(f"{'run':<{width}}  weight  {'accuracy':<15}  {'log-loss':<15}  recorded accuracy")

    def line(name: str, weight: float, info: dict, tail: str) -> None:
        print(f"{name:<{width}}  {weight:.3f}   {info['cv_mean']:.4f} ± {info['cv_std']:.4f}  "
              f"{info['log_loss']:.4f} ± {info['log_loss_std']:.4f}  {tail}")

    for info in out["inputs"]:
        line(info["run"], info["weight"], info, _num(info["recorded_cv"], 4))
    best = max(out["inputs"], key=lambda i: i["cv_mean"])
    line(label, 1.0, out, f"{out['cv_mean'] - best['cv_mean']:+.4f} vs the best input")
    if args.weights == "fit":
        gain = out["equal"]["cv_mean"] - out["cv_mean"]
        line(EQUAL_LABEL, 1 / len(runs), out["equal"], f"{gain:+.4f} vs the fitted blend")
    if out["cv_mean"] < best["cv_mean"]:
        print(f"note: the blend does not beat {best['run']} on CV accuracy; submitting that run is as good")
    return write_leaves_blend(runs, out, args.out_dir, args.seed, time.perf_counter() - start)


def weights_help(mode: str, loss: str) -> str:
    """The printed table's first line names the --weights mode (and the loss a fit minimises)."""
    return f"fit on out-of-fold {loss}, CV cross-fitted" if mode == "fit" else "equal (1/n), nothing fitted"


# the table's row names: the blend under each --weights mode, and the comparison line under ``fit``
BLEND_LABELS = {"fit": "blend (cross-fitted)", "equal": "blend (equal weights)"}
EQUAL_LABEL = "equal weights (1/n)"

# a competition's ``BlendSpec.kind`` -> how its runs are blended
BLENDERS = {"regression": run_regression, "probabilities": run_leaves}
