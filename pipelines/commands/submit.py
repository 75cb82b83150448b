"""``python -m pipelines submit FILE -m MESSAGE``: validate a submission, send it with the kaggle client,
and record it in the run record.

Validation comes first and is rebuilt from the competition's own files (the registry's ``Competition.build_spec``):
columns and their order, ids equal to the test set's, no NaN/inf, positive prices, known labels.
``--dry-run`` stops there and never imports the kaggle client.

Recording: the run record (``<stem>.json``) gains a ``submissions`` list, one entry per send (UTC time,
message, SHA-256 of the file, Kaggle slug, Kaggle's reference, the credential *method*). The record is
rewritten atomically (``atomic_write``) and only ever gains fields: every existing key keeps
its value, which is checked before the replace. Secrets are never part of it. With ``--mlflow`` the record is
then mirrored (``core.tracking``): a public score read back lands in the run's MLflow run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipelines.commands import float_in, positive_float
from pipelines.commands.runs import Run, read_run
from pipelines.core import tracking
from pipelines.core.errors import PipelineError
from pipelines.core.files import atomic_write, file_digest
from pipelines.core.kaggle_client import DEFAULT_TIMEOUT, TIMEOUT_ENV
from pipelines.core.records import dumps, utc_now
from submissions.writer import SubmissionSpec, validate_submission


def read_submission(path: Path) -> pd.DataFrame:
    """The file as strings (ids and labels compared literally); one-line errors for unreadable files."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    try:
        return pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError as err:
        raise PipelineError(f"{path}: empty file") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a readable CSV ({type(err).__name__})") from err


def run_of(path: Path) -> Run | None:
    """The run a submission file belongs to: its sibling ``<stem>.json``, if there is one."""
    record = path.with_suffix(".json")
    return read_run(record) if record.is_file() else None


def resolve(path: Path, competition: str | None, data_dir: str | None) -> tuple[Run | None, SubmissionSpec, str]:
    """The run (if any), the spec to validate against, and the Kaggle slug to send to."""
    from pipelines.competitions import get_competition, list_competitions

    if not path.is_file():
        raise PipelineError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    run = run_of(path)
    if run is None:
        if not competition:
            raise PipelineError(f"{path} has no run record beside it ({path.with_suffix('.json').name}): "
                                f"pass --competition ({' or '.join(c.name for c in list_competitions())})")
        comp = get_competition(competition)
        return None, comp.build_spec(data_dir), comp.kaggle_slug
    if competition and get_competition(competition).name != run.competition:
        raise PipelineError(f"{path} is a {run.competition} run, not {competition}")
    comp = get_competition(run.competition)
    slug = run.record.kaggle_competition or comp.kaggle_slug  # the record's own slug first
    return run, comp.build_spec(run.record.data_dir if data_dir is None else data_dir), slug


def validate(path: Path, competition: str | None = None, data_dir: str | None = None) -> tuple[Run | None, str, int]:
    """Validate ``path`` against its competition; returns its run, Kaggle slug and number of rows."""
    run, spec, slug = resolve(path, competition, data_dir)
    frame = read_submission(path)
    validate_submission(frame, spec)
    return run, slug, len(frame)


def append_submission(record_path: Path, entry: dict) -> None:
    """Add ``entry`` to the record's ``submissions`` list by an atomic replace that only ever adds."""
    before = json.loads(record_path.read_text())
    after = {**before, "submissions": [*before.get("submissions", []), entry]}
    _replace(record_path, before, after)


def set_scores(record_path: Path, scores: dict[int, float]) -> None:
    """Add ``public_score`` to submission entries (by Kaggle ref) that have none yet."""
    before = json.loads(record_path.read_text())
    subs = [dict(s) for s in before.get("submissions", [])]
    for s in subs:
        if s.get("kaggle_ref") in scores and s.get("public_score") is None:
            s["public_score"] = scores[s["kaggle_ref"]]
    _replace(record_path, before, {**before, "submissions": subs})


def _replace(path: Path, before: dict, after: dict) -> None:
    for key, value in before.items():  # the promise: existing fields keep their values
        if key != "submissions" and after.get(key) != value:
            raise PipelineError(f"{path}: refusing to change field {key!r} of a run record")
    old = before.get("submissions", [])
    new = after.get("submissions", [])
    if any({k: n.get(k) for k in o} != o for o, n in zip(old, new, strict=False)) or len(new) < len(old):
        raise PipelineError(f"{path}: refusing to change a recorded submission")
    with atomic_write(path) as fh:
        fh.write(dumps(after))


def fetch_scores(record_path: Path, slug: str, creds, wait: float, timeout: float | None = None) -> dict[int, float]:
    """Poll Kaggle (up to ``wait`` seconds, each call limited to ``timeout``) for the public scores of this
    record's submissions."""
    from pipelines.core import kaggle_client

    refs = {s.get("kaggle_ref") for s in json.loads(record_path.read_text()).get("submissions", [])} - {None}
    if not refs:
        raise PipelineError(f"{record_path.name}: no recorded submission with a Kaggle reference to score")
    deadline = time.monotonic() + wait
    while True:
        found = {s["ref"]: s["public_score"] for s in kaggle_client.submissions(slug, creds, timeout)
                 if s["ref"] in refs and s["public_score"] is not None}
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the submission CSV (a run's <stem>.csv, or any file with --competition)")
    parser.add_argument("-m", "--message", default=None, help="submission description (default: run name and CV)")
    parser.add_argument("--dry-run", action="store_true", help="validate only; nothing is sent")
    parser.add_argument("--fetch-score", action="store_true",
                        help="after sending, poll Kaggle for the public score and record it")
    parser.add_argument("--score-only", action="store_true",
                        help="send nothing: read back the public scores of this file's recorded submissions")
    parser.add_argument("--wait", type=float_in(0), default=120.0, help="seconds to wait for a score (default 120)")
    parser.add_argument("--timeout", type=positive_float, default=None,
                        help="seconds each network call may wait for Kaggle before giving up (default: "
                             f"${TIMEOUT_ENV}, else {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--competition", default=None, help="for a file without a run record beside it")
    parser.add_argument("--data-dir", default=None, help="the competition files (default: the ones the run used)")


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    run_, slug, rows = validate(path, args.competition, args.data_dir)
    print(f"valid: {path} ({rows} rows) for {slug}")
    if run_ is not None and (run_.record.extra.get("data") or {}).get("source") == "synthetic":
        raise PipelineError(f"{path} comes from a synthetic leaf set; it cannot be scored on Kaggle")
    if args.dry_run:
        print("dry run: nothing sent")
        return 0

    from pipelines.core import kaggle_client

    creds = kaggle_client.require_credentials()
    if args.score_only:
        if run_ is None:
            raise PipelineError(f"{path}: no run record, so no recorded submissions to score")
        scores = fetch_scores(run_.path, slug, creds, 0.0, args.timeout)
        set_scores(run_.path, scores)
        print(f"public scores: {scores or 'none yet'}")
        tracking.mirror_run(args, run_.path)  # --mlflow: the scores into the run's MLflow run
        return 0

    message = args.message or (f"{path.stem} (CV {run_.cv_mean:.5f})" if run_ else path.stem)
    digest = file_digest(path)
    print(f"sending {path.name} to {slug} with {creds.describe()} ...", flush=True)
    response = kaggle_client.submit(path, message, slug, creds, args.timeout)
    entry = {"time_utc": utc_now().isoformat(timespec="seconds"), "message": message, "file": path.name,
             "sha256": digest, "kaggle_competition": slug, "kaggle_ref": response["ref"],
             "kaggle_message": response["message"], "credentials": creds.method}
    if run_ is not None:
        append_submission(run_.path, entry)
        print(f"recorded in {run_.path}")
    else:
        print("not recorded: the file has no run record", file=sys.stderr)
    print(f"submitted: {slug} ref {response['ref']} ({response['message'] or 'ok'})")
    if args.fetch_score and run_ is not None:
        scores = fetch_scores(run_.path, slug, creds, args.wait, args.timeout)
        set_scores(run_.path, scores)
        score = scores.get(response["ref"])
        print(f"public score: {score if score is not None else f'not ready after {args.wait:.0f}s'}")
    if run_ is not None:
        tracking.mirror_run(args, run_.path)  # --mlflow: the run, and its public score when it came back
    return 0
