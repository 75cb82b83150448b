"""``python -m pipelines runs``: a leaderboard of every run on disk, best CV first.

The run records are the only source: a run is a ``<stem>.json`` written by ``submissions.writer.write_run``
beside its ``<stem>.csv``. The table is printed and also written as CSV (a derived view, regenerated on
every call, so it is the one file under ``out_dir`` that is overwritten, with ``--plot``'s figure).

``--plot`` draws each submitted run's CV against its public score (the last one ``submit`` recorded) with
their rank correlation: whether the CV orders runs as the leaderboard does, i.e. whether it can be trusted
to choose between them. Runs without a public score are listed by their table number, not plotted.

``--mlflow`` mirrors every run listed into the MLflow store (``core.tracking``): runs made before tracking was
on, or whose mirror failed, catch up; those already there gain only their new public scores.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import tracking
from pipelines.core.errors import PipelineError
from pipelines.core.files import atomic_write
from pipelines.core.records import RunRecord

SUFFIXES = (".json", ".csv", "_oof.csv", "_test_probs.csv")
COLUMNS = ("time", "preset", "models", "cv_mean", "cv_std", "wall_s", "submitted", "public_score", "path", "missing")


@dataclass
class Run:
    """One run on disk: where its record is, and the record (any version, upgraded on read)."""

    path: Path  # the record .json
    record: RunRecord

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def competition(self) -> str:
        return self.record.competition

    @property
    def submission(self) -> Path:
        return self.path.with_name(self.record.files["submission"])

    @property
    def oof(self) -> Path | None:
        name = self.record.files.get("oof")
        return self.path.with_name(name) if name else None

    @property
    def missing(self) -> list[str]:
        """The files its record names that are gone (``submission``, ``oof``, ``tables.<name>``): an incomplete run
        cannot be submitted or blended as it stands, so the leaderboard says so and ranks it last."""
        named = {"submission": self.submission, "oof": self.oof,
                 **{f"tables.{k}": self.table(k) for k in self.record.files.get("tables") or {}}}
        return [k for k, path in named.items() if path is not None and not path.is_file()]

    def table(self, name: str) -> Path | None:
        """A further table the run wrote (leaves: ``test_probs``), if its record names one."""
        file = (self.record.files.get("tables") or {}).get(name)
        return self.path.with_name(file) if file else None

    @property
    def partly_scored(self) -> bool:
        """An older house-prices run whose ``cv_mean`` left some rows out of scoring: ranked by its all-rows CV."""
        rows = self.record.extra.get("scored_rows")
        return rows is not None and "cv_all_rows" in self.record.extra and rows < len(self.fold_ids or [])

    @property
    def cv_mean(self) -> float:
        if self.partly_scored:
            return float(self.record.extra["cv_all_rows"])
        return float(self.record.cv_mean)

    @property
    def cv_std(self) -> float:
        std = self.record.cv_std
        return math.nan if self.partly_scored or std is None else float(std)

    @property
    def fold_ids(self) -> list | None:
        return self.record.fold_ids


def is_record(data: object) -> bool:
    return isinstance(data, dict) and "competition" in data and isinstance(data.get("files"), dict) \
        and "submission" in data["files"]


def read_run(path: Path) -> Run:
    """The run whose record is ``path``; one error line naming the file and what is wrong with it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: not a readable run record ({type(err).__name__})") from err
    return to_run(path, data)


def to_run(path: Path, data: object) -> Run:
    """``data`` read from ``path`` as a run, each of its fields the leaderboard shows readable (``row``), or one
    error naming the file and its bad field (a hand-edited or truncated record must not surface as a traceback
    in whatever command reads it next)."""
    if not is_record(data):
        raise PipelineError(f"{path}: not a run record (no competition/files.submission)")
    try:
        run = Run(path, RunRecord.from_dict(data))
        row(run)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise PipelineError(f"{path}: bad run record: {err}") from None
    return run


def find_run(ref: str, out_dir: str | Path) -> Run:
    """A run from any of its files, its record, its stem, or a unique stem prefix under ``out_dir``."""
    path = Path(ref)
    if path.is_file():
        name = path.name
        for suffix in sorted(SUFFIXES, key=len, reverse=True):
            if name.endswith(suffix):
                return read_run(path.with_name(name[: -len(suffix)] + ".json"))
        if "_" in path.stem and path.suffix == ".png":  # a figure: <stem>_<fig>.png
            return read_run(path.with_name(path.stem.rsplit("_", 1)[0] + ".json"))
        raise PipelineError(f"{ref}: not a run file (.json, .csv or _oof.csv)")
    matches = sorted(p for p in Path(out_dir).glob(f"*/{path.name}*.json") if p.stem.startswith(path.name))
    exact = [p for p in matches if p.stem == path.name]
    if exact or len(matches) == 1:
        return read_run((exact or matches)[0])
    if not matches:
        raise PipelineError(f"no run {ref!r}: not a file, nor a run stem under {out_dir}")
    raise PipelineError(f"{ref!r} matches {len(matches)} runs under {out_dir}, e.g. {matches[0].stem}; be more precise")


def load_runs(out_dir: str | Path, competition: str | None = None) -> list[Run]:
    """Every good run record under ``out_dir`` (optionally one competition's folder).

    One bad record never hides the others: a file that is not JSON, or a record with a field of the wrong
    type (``cv_mean`` as text or null...), is skipped, and every such file is named in one warning line.
    A JSON file that does not look like a record at all (no ``competition``) is not a run and is ignored.
    """
    root = Path(out_dir)
    folders = [root / competition] if competition else sorted(p for p in root.glob("*") if p.is_dir())
    runs, bad = [], []
    for path in (p for folder in folders for p in sorted(folder.glob("*.json"))):
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "competition" in data:
                runs.append(to_run(path, data))
        except (OSError, ValueError) as err:
            bad.append(f"{path} (unreadable JSON: {type(err).__name__})")
        except PipelineError as err:
            bad.append(f"{path} ({str(err).removeprefix(f'{path}: ')})")
    if bad:
        print(f"warning: skipped {len(bad)} bad run record{'s' * (len(bad) > 1)}: {'; '.join(bad)}", file=sys.stderr)
    return runs


def models_label(record: RunRecord) -> str:
    """What a run fitted, short: its models with non-zero blend weight, its backbone, or its inputs' models."""
    inputs = record.extra.get("inputs")
    if isinstance(inputs, list) and inputs:  # a blend: the presets it blends
        return "+".join(str(i.get("models") or i.get("preset")) for i in inputs
                        if isinstance(i, dict) and i.get("weight", 1) > 1e-6)
    weights = record.extra.get("blend_weights")
    if isinstance(weights, dict) and weights:
        return "+".join(n for n, w in weights.items() if w > 1e-6) or "-"
    config = record.config or {}
    return str(config.get("model") or ",".join(config.get("models") or []) or "-")


def row(run: Run, relative_to: Path | None = None) -> dict:
    """One leaderboard row: the CSV's and the table's fields."""
    subs = run.record.submissions or []
    scores = [s["public_score"] for s in subs if s.get("public_score") is not None]
    path = run.submission
    if relative_to is not None and path.resolve().is_relative_to(relative_to.resolve()):
        path = path.resolve().relative_to(relative_to.resolve())
    return {
        "time": run.record.created_utc,
        "preset": run.record.preset,
        "models": models_label(run.record),
        "cv_mean": run.cv_mean,
        "cv_std": run.cv_std,
        "wall_s": float(run.record.timings.get("total_s", math.nan)),
        "submitted": len(subs),
        "public_score": scores[-1] if scores else None,
        "path": str(path),
        "missing": " ".join(run.missing),
    }


def leaderboard(runs: list[Run], greater_is_better: bool = False) -> list[dict]:
    """Rows sorted best CV first; incomplete runs (a file gone, ``Run.missing``) after every complete one, and
    runs without a CV last within each."""
    rows = [row(r, Path.cwd()) for r in runs]

    def key(r: dict) -> tuple:
        cv = r["cv_mean"]
        no_cv = cv is None or math.isnan(cv)
        return (bool(r["missing"]), no_cv, 0.0 if no_cv else (-cv if greater_is_better else cv), r["time"])

    return sorted(rows, key=key)


def _fmt(value, digits: int = 5) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict], metric: str) -> str:
    header = ["#", "time (UTC)", "preset", "models", f"CV {metric}", "wall", "sub", "public", "path"]
    body = [[str(i + 1), r["time"].replace("+00:00", ""), r["preset"], r["models"],
             f"{_fmt(r['cv_mean'])} ± {_fmt(r['cv_std'])}", f"{_fmt(r['wall_s'], 1)}s",
             "yes" if r["submitted"] else "no", _fmt(r["public_score"]),
             r["path"] + (f"  [incomplete, missing: {r['missing']}]" if r["missing"] else "")]
            for i, r in enumerate(rows)]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_csv_target(path: Path) -> None:
    """Refuse a ``--csv`` that is a folder or whose folder is a file or cannot be written, before any work."""
    from submissions.writer import check_writable_dir

    if path.is_dir():
        raise PipelineError(f"--csv {path}: is a folder, not a file")
    check_writable_dir(path.parent, "--csv")


def write_csv(rows: list[dict], path: Path | None) -> None:
    """The rows as CSV to ``path`` (``None``: stdout), replaced atomically (``atomic_write``)."""
    if path is None:
        _write_rows(rows, sys.stdout)
        return
    with atomic_write(path, newline="") as fh:
        _write_rows(rows, fh)


def _write_rows(rows: list[dict], fh) -> None:
    writer = csv.DictWriter(fh, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--competition", default=None,
                        help="one competition folder under --out-dir (default: every competition found)")
    parser.add_argument("--csv", default=None,
                        help="where to write the CSV ('-' for stdout; default <out-dir>/<competition>/runs.csv)")
    parser.add_argument("--plot", action="store_true",
                        help="also draw each submitted run's CV against its public score, with their rank "
                             "correlation (PNG beside the CSV: runs_cv_vs_public.png)")


def run(args: argparse.Namespace) -> int:
    """Print each competition's leaderboard, then write its CSV copy.

    The table comes first: the CSV is a derived copy, so a folder it cannot be written to (read-only,
    full) costs that copy only, said in one warning line. An explicit ``--csv`` is the user's request and is
    checked before any work instead.
    """
    from pipelines.competitions import get_competition

    out_dir = Path(args.out_dir)
    name = None
    if args.competition:
        try:
            name = get_competition(args.competition).name
        except PipelineError:  # a folder of runs from a competition this checkout does not know
            name = args.competition
    groups: dict[str, list[Run]] = {}
    for r in load_runs(out_dir, name):  # read once: each bad record is named once
        groups.setdefault(r.path.parent.name, []).append(r)
    if not groups:
        raise PipelineError(f"no {name} runs under {out_dir / name}" if name else
                            f"no runs under {out_dir}: run a pipeline first, e.g. `make house-prices`")
    if args.csv and args.csv != "-":
        if len(groups) > 1:
            raise PipelineError(f"--csv {args.csv} with {len(groups)} competitions: add --competition")
        check_csv_target(Path(args.csv))
    for i, (name, runs) in enumerate(sorted(groups.items())):
        try:
            comp = get_competition(name)
            metric, greater = comp.metric, comp.greater_is_better
        except PipelineError:
            metric, greater = runs[0].record.metric, False
        rows = leaderboard(runs, greater)
        default_csv = out_dir / name / "runs.csv"
        if args.csv == "-":
            write_csv(rows, None)
            if args.plot:
                print(plot_line(rows, metric, default_csv), file=sys.stderr)
            continue
        if i:
            print()
        incomplete = sum(bool(r["missing"]) for r in rows)
        print(f"{name}: {len(rows)} runs{f' ({incomplete} incomplete, ranked last)' if incomplete else ''}, "
              f"best {'highest' if greater else 'lowest'} {metric} first")
        print(format_table(rows, metric))
        csv_path = Path(args.csv) if args.csv else default_csv
        try:
            write_csv(rows, csv_path)
        except OSError as err:
            print(f"warning: the leaderboard above is complete, but its CSV copy {csv_path} could not be written "
                  f"({err.strerror or type(err).__name__}); pass --csv PATH or --csv -", file=sys.stderr)
        else:
            print(f"csv: {csv_path}")
        if args.plot:
            print(plot_line(rows, metric, csv_path))
    line = tracking.mirror_all(args, [r.path for runs in groups.values() for r in runs])  # --mlflow: catch up every run
    if line:
        print(line, file=sys.stderr if args.csv == "-" else sys.stdout)
    return 0


# --------------------------------------------------------------------------------------- CV vs public
def submitted(rows: list[dict]) -> tuple[list[int], list[int]]:
    """Table indexes of the rows with a public score and a CV (plotted), and of the others (listed)."""
    scored = [i for i, r in enumerate(rows) if r["public_score"] is not None and math.isfinite(r["cv_mean"])]
    return scored, [i for i in range(len(rows)) if i not in scored]


def rank_correlation(cv: list[float], public: list[float]) -> float | None:
    """Spearman's rank correlation of CV and public score; ``None`` under 3 runs or when either is constant."""
    from scipy.stats import spearmanr

    if len(cv) < 3 or len(set(cv)) < 2 or len(set(public)) < 2:
        return None
    return float(spearmanr(cv, public).statistic)


def plot_cv_vs_public(rows: list[dict], metric: str, path: Path) -> float | None:
    """The figure at ``path`` (replaced atomically): one point per submitted run, labelled with its table
    number, the line public = CV, and the rank correlation in the title. Returns the correlation."""
    from pipelines.core.plots import pyplot

    plt = pyplot()
    scored, _ = submitted(rows)
    cv, public = [rows[i]["cv_mean"] for i in scored], [float(rows[i]["public_score"]) for i in scored]
    rho = rank_correlation(cv, public)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter(cv, public, zorder=3)
    for i, x, y in zip(scored, cv, public, strict=True):
        ax.annotate(f"#{i + 1} {rows[i]['preset']}", (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8)
    low, high = min(cv + public), max(cv + public)
    ax.plot([low, high], [low, high], ls="--", lw=1, color="grey", label="public = CV")
    ax.set_xlabel(f"CV {metric}")
    ax.set_ylabel(f"public leaderboard {metric}")
    corr = f"{rho:.2f}" if rho is not None else "n/a (needs 3 runs with distinct scores)"
    ax.set_title(f"{len(scored)} submitted runs: Spearman rank correlation {corr}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
    return rho


def plot_line(rows: list[dict], metric: str, csv_path: Path) -> str:
    """Draw the figure beside ``csv_path`` (when a run has a public score) and say where, what, and which
    runs were left out."""
    scored, others = submitted(rows)
    left = f"; not plotted, no public score: {', '.join(f'#{i + 1}' for i in others)}" if others else ""
    if not scored:
        return f"plot: none of the {len(rows)} runs has a public score yet (submit --fetch-score), nothing drawn"
    path = csv_path.with_name(f"{csv_path.stem}_cv_vs_public.png")
    rho = plot_cv_vs_public(rows, metric, path)
    corr = f"rank correlation {rho:.2f}" if rho is not None else "rank correlation n/a (fewer than 3 runs)"
    return f"plot: {path} (CV vs public score of {len(scored)} runs, {corr}{left})"
