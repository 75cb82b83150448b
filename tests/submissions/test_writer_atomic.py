"""A run appears whole or not at all: real processes racing for one name, real SIGINTs while writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core.errors import PipelineError
from pipelines.core.records import RunRecord
from submissions.writer import SubmissionSpec, check_writable_dir, write_run

REPO = Path(__file__).resolve().parents[2]
SPEC = SubmissionSpec("toy", ["Id", "SalePrice"], ids=pd.Series([1, 2, 3]), positive=True)
GOOD = pd.DataFrame({"Id": [1, 2, 3], "SalePrice": [1.0, 2.0, 3.0]})
PARTS = (".csv", ".json", "_oof.csv")


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def interactive_sigint() -> None:
    """In the child, SIGINT as in a terminal: a test run in the background (``make test &``, CI) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_whole_runs(folder: Path, parts=PARTS) -> list[str]:
    """Every run in ``folder`` has all its files and a readable record; nothing else is there."""
    if not folder.exists():
        return []
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".")], f"leftovers: {names}"
    stems = sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))
    for stem in stems:
        record = json.loads((folder / f"{stem}.json").read_text())
        assert record["files"]["submission"] == f"{stem}.csv"
        for suffix in parts:
            assert (folder / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
    expected = {f"{s}{suffix}" for s in stems for suffix in parts}
    assert set(names) == expected, f"files without a record: {sorted(set(names) - expected)}"
    return stems


def test_nan_cv_or_unserialisable_record_writes_nothing(tmp_path):
    with pytest.raises(PipelineError, match="CV score is nan.*nothing was written"):
        write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", float("nan"), "rmse"))
    with pytest.raises(PipelineError, match=r"record cannot be saved \(fold_scores\[0\] is not a finite.*nothing was"):
        write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse", fold_scores=[np.nan]))
    assert not list(tmp_path.rglob("*"))


def test_out_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(PipelineError, match="is a file, not a folder"):
            check_writable_dir(bad)
    check_writable_dir(tmp_path / "new" / "deeper")  # creatable is fine, and it is not created by the check
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PipelineError, match="cannot write"):
            check_writable_dir(ro / "house-prices")
    finally:
        ro.chmod(0o755)


WRITER = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from pipelines.core.records import RunRecord
    from submissions.writer import SubmissionSpec, write_run

    out, start = sys.argv[1], float(sys.argv[2])
    spec = SubmissionSpec("toy", ["Id", "SalePrice"], ids=pd.Series(range(1, 2001)), positive=True)
    frame = pd.DataFrame({"Id": range(1, 2001), "SalePrice": 1.5})
    oof = pd.DataFrame({"Id": range(20000), "prediction": 0.5, "fold": 1})
    while time.time() < start:
        time.sleep(0.001)
    files = write_run(frame, spec, out_dir=out, record=RunRecord("toy", "race", 0.1, "rmse", seed=0), oof=oof)
    print(files.record.name)
""")


def test_same_second_race_of_real_processes_loses_no_run(tmp_path):
    """Six processes publish the same run name in the same second into one folder: six whole runs."""
    start = int(time.time()) + 6.1  # the start-up (imports) is done by then; all write in one second
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(start)], cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    stems = assert_whole_runs(tmp_path / "toy")
    assert len(stems) == 6 and sorted(out.strip().removesuffix(".json") for out, _ in results) == stems
    seconds = {s.split("_")[0] for s in stems}
    assert len(seconds) < 6, "the processes did not write in the same second: no race was tested"
    assert any(s.endswith("-2") for s in stems)


LOOP = textwrap.dedent("""
    import os, sys
    from pipelines.core.plots import pyplot
    plt = pyplot()
    import pandas as pd
    from pipelines.core.records import RunRecord
    from submissions.writer import SubmissionSpec, write_run

    spec = SubmissionSpec("toy", ["Id", "SalePrice"], ids=pd.Series(range(1, 3001)), positive=True)
    frame = pd.DataFrame({"Id": range(1, 3001), "SalePrice": 1.5})
    oof = pd.DataFrame({"Id": range(30000), "prediction": 0.5})

    def attempt():
        try:  # a fresh figure each time: a draw cut short by Ctrl-C leaves matplotlib's figure half-updated
            fig, ax = plt.subplots()
            ax.plot(range(100))
            plt.close(fig)
            write_run(frame, spec, out_dir=sys.argv[1], record=RunRecord("toy", "int", 0.1, "rmse"), oof=oof,
                      figures={"cv": fig})
            return "done"
        except KeyboardInterrupt:
            return "interrupted"

    events = []
    print("ready", flush=True)
    while True:
        try:  # the stop check inside the try too: a SIGINT can land in os.path.exists (seen under load)
            if os.path.exists(sys.argv[2]):
                break
            events.append(attempt())
        except KeyboardInterrupt:
            events.append("between")  # landed outside write_run (between two writes): not a writer case
        except Exception:  # a SIGINT inside matplotlib's own code can surface as another error (TypeError)
            events.append("other")  # the folder must still hold only whole runs: asserted below
    print(" ".join(events), flush=True)  # the signals have stopped by now
""")


def test_sigint_at_any_moment_of_writing_leaves_whole_runs_or_nothing(tmp_path):
    """Real SIGINTs, every few milliseconds, into a process that keeps writing runs: many runs are cut short,
    and the folder holds only whole runs (csv, oof, figure and a readable record), never a partial one."""
    out, stop = tmp_path / "out", tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(out), str(stop)], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interactive_sigint)
    assert proc.stdout.readline().strip() == "ready"
    rng = np.random.default_rng(0)
    for _ in range(60):
        time.sleep(rng.uniform(0.002, 0.05))
        proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    stop.touch()
    lines, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    events = lines.split()
    assert events.count("interrupted") >= 5 and events.count("done") >= 1, events
    stems = assert_whole_runs(out / "toy", (*PARTS, "_cv.png"))
    assert events.count("done") <= len(stems) <= len(events)  # a run interrupted after its last link is whole


def test_sigint_during_a_real_house_prices_write_is_one_line_and_leaves_nothing_partial(tmp_path):
    """The issue's repro: SIGINT 20 ms after the run's first file appears."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", "house-prices", "--models", "lasso", "--folds", "2", "--no-progress",
           "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interactive_sigint)
    deadline = time.monotonic() + 120
    while not (out / "house-prices").is_dir() or not any((out / "house-prices").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before writing"
        time.sleep(0.001)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    stems = assert_whole_runs(out / "house-prices", (*PARTS, "_cv.png"))
    if proc.returncode == 0:  # the signal came after the run was published: it is whole
        assert len(stems) == 1
    else:
        assert proc.returncode == 130 and stderr.strip() == "error: interrupted"
        assert len(stems) <= 1


def test_without_hard_links_the_writer_claims_names_exclusively(tmp_path, monkeypatch):
    """Filesystems without hard links (FAT, some network mounts): same guarantees through O_EXCL + replace."""

    def no_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    first = write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse"), oof=GOOD)
    second = write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse"), oof=GOOD)
    assert first.record != second.record
    assert len(assert_whole_runs(tmp_path / "toy")) == 2
