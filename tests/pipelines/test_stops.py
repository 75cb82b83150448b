"""Every stop is clean (issue 23, principle 4): SIGTERM is a Ctrl-C (one line, exit 143, no staging folder left),
tune's workers stop with their session (even after a ``kill -9`` of it), a full disk is one line naming the file
and leaves no partial checkpoint. The signal and orphan cases use real processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pandas as pd
import pytest

from pipelines.__main__ import main
from pipelines.core.errors import PipelineError, Terminated
from pipelines.core.records import RunRecord
from submissions.writer import SubmissionSpec, write_run

REPO = Path(__file__).resolve().parents[2]
SPEC = SubmissionSpec("toy", ["Id", "SalePrice"])
GOOD = pd.DataFrame({"Id": [1, 2], "SalePrice": [1.0, 2.0]})
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PIPELINES_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# ------------------------------------------------------------------------------------------------ SIGTERM
SLOW_RUN = textwrap.dedent("""
    import sys, time
    import pandas as pd
    import pipelines.commands.runs
    from pipelines.__main__ import main
    from pipelines.core.records import RunRecord
    from submissions.writer import SubmissionSpec, write_run

    class SlowFigure:  # saved after the submission: the staging folder holds a partial run meanwhile
        def savefig(self, path, **kwargs):
            open(path, "wb").write(b"half a png")
            print("staging", flush=True)
            time.sleep(60)

    def run(args):
        write_run(pd.DataFrame({"Id": [1, 2], "SalePrice": [1.0, 2.0]}), SubmissionSpec("toy", ["Id", "SalePrice"]),
                  out_dir=args.out_dir, record=RunRecord("toy", "p", 0.1, "rmse"), figures={"cv": SlowFigure()})

    pipelines.commands.runs.run = run
    sys.exit(main(["runs", "--out-dir", sys.argv[1]]))
""")


def test_sigterm_while_a_run_is_staged_is_one_line_exit_143_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(out)], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staging", proc.stderr.read()
        (staging,) = (out / "toy").glob(".staging-*")
        assert (staging / "submission.csv").is_file()  # what the default SIGTERM used to leave behind
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143 and stderr.strip() == "error: terminated", stderr
    assert list((out / "toy").iterdir()) == []


def test_sigterm_in_process_is_exit_143_and_the_previous_handler_comes_back(monkeypatch, capsys):
    import pipelines.commands.runs

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(pipelines.commands.runs, "run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["runs"]) == 143
    assert capsys.readouterr().err == "error: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------ tune's workers
@linux_only
def test_a_worker_stops_when_its_parent_is_killed_with_sigkill(tmp_path):
    """The real thing: parent -> worker that asked ``die_with_parent``; ``kill -9`` of the parent ends it."""
    worker = ("import os, time; from pipelines.core.tuning import die_with_parent; "
              "print(die_with_parent(os.getppid()), os.getpid(), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "subprocess.Popen([sys.executable, '-c', sys.argv[1]]).wait()", worker],
                              cwd=tmp_path, env=env(), stdout=subprocess.PIPE, text=True)
    asked, pid = parent.stdout.readline().split()
    try:
        assert asked == "True"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(int(pid)), "the worker outlived its parent"
    finally:
        if alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)


def test_a_stopped_tune_session_terminates_its_workers(monkeypatch):
    """Ctrl-C, SIGTERM (``Terminated``) or an error in the parent's progress loop: its workers get SIGTERM."""
    from pipelines.commands import tune

    started = []
    real_popen = subprocess.Popen

    def popen(argv, env):
        started.append((real_popen([sys.executable, "-c", "import time; time.sleep(60)"]), env))
        return started[-1][0]

    class Stopped:
        def line(self, study):
            raise Terminated

    monkeypatch.setattr(tune.subprocess, "Popen", popen)
    monkeypatch.setattr(tune, "child_argv", lambda args, index: ["worker", str(index)])
    monkeypatch.setattr(tune, "time", types.SimpleNamespace(sleep=lambda s: None, monotonic=time.monotonic))
    try:
        with pytest.raises(Terminated):
            args = types.SimpleNamespace(workers=2, storage="sqlite:///s.db", mlflow=False)
            tune.run_workers(args, None, Stopped())
        assert [p.returncode for p, _ in started] == [-signal.SIGTERM] * 2
        assert all(env[tune.PARENT_ENV] == str(os.getpid()) for _, env in started)
    finally:
        for p, _ in started:
            p.kill()
            p.wait()


def test_a_worker_process_asks_to_stop_with_its_parent_first(monkeypatch, capsys):
    from pipelines.commands import tune
    from pipelines.core import tuning

    asked = []

    def stop_here(parent):
        asked.append(parent)
        raise PipelineError("stopped before any work")

    monkeypatch.setattr(tuning, "die_with_parent", stop_here)
    monkeypatch.setenv(tune.PARENT_ENV, "4242")
    assert main(["tune", "house-prices", "--worker-index", "1", "--no-plots"]) == 2
    assert asked == [4242] and "stopped before any work" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- full disk
TORCH_FULL = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
              "file write failed")


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    from pipelines.core import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"epoch": 1})

    def full(state, fh):
        fh.write(b"half a checkpoint")
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(checkpoint.torch, "save", full)
    for free, message in [(0, f"no space left on device writing {path}"),
                          (2**33, f"cannot write {path}: torch's write failed (8192 MiB free on its device)")]:
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p, free=free: types.SimpleNamespace(free=free))
        with pytest.raises(PipelineError) as err:
            checkpoint.save_checkpoint(path, {"epoch": 2})
        assert str(err.value) == message
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file, the old one whole
        assert checkpoint.load_checkpoint(path)["epoch"] == 1

    def bug(state, fh):
        raise RuntimeError("a bug")

    monkeypatch.setattr(checkpoint.torch, "save", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # any other failure of torch.save stays what it is
        checkpoint.save_checkpoint(path, {"epoch": 2})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_real_enospc_in_an_atomic_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import torch

    from pipelines.core import files
    from pipelines.core.checkpoint import save_checkpoint

    real_open = open
    monkeypatch.setattr(files, "open", lambda path, mode, **kw: real_open("/dev/full", mode.replace("x", "w"), **kw),
                        raising=False)
    with pytest.raises(PipelineError) as err, files.atomic_write(tmp_path / "record.json") as fh:
        fh.write("{}")
    assert str(err.value) == f"no space left on device writing {tmp_path / 'record.json'}"
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(PipelineError) as err:  # torch.save itself into the full device
        save_checkpoint(tmp_path / "last.pt", {"weights": torch.zeros(100_000)})
    assert str(err.value) == f"no space left on device writing {tmp_path / 'last.pt'}"
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_staging_a_run_is_one_line_and_leaves_no_staging_folder(tmp_path, monkeypatch):
    def full(frame, path, **kwargs):
        Path(path).write_text("Id,Sal")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(PipelineError) as err:
        write_run(GOOD, SPEC, out_dir=tmp_path, record=RunRecord("toy", "p", 0.1, "rmse"))
    assert str(err.value) == f"no space left on device writing {tmp_path / 'toy'}"
    assert list((tmp_path / "toy").iterdir()) == []


@pytest.mark.parametrize("code, message", [
    (errno.ENOSPC, "no space left on device writing /data/runs/x.pt"),
    (errno.EROFS, "read-only file system: cannot write /data/runs/x.pt"),
    (errno.EACCES, "permission denied: /data/runs/x.pt"),
])
def test_an_os_error_the_user_can_act_on_is_one_line_with_exit_2(code, message, log_dir, monkeypatch, capsys):
    import pipelines.commands.runs

    def fail(args):
        raise OSError(code, os.strerror(code), "/data/runs/x.pt")

    monkeypatch.setattr(pipelines.commands.runs, "run", fail)
    assert main(["runs"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not log_dir.exists()  # a known failure: no traceback to keep
