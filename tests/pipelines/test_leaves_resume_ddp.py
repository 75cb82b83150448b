"""Real processes: a run killed with SIGKILL and resumed ends bit-identical; DDP on CPU (gloo, 2 ranks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipelines.competitions.leaves.leafgen import generate_leaves

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--model", "test_efficientnet", "--no-pretrained", "--batch-size", "8", "--folds", "2", "--fold", "0",
        "--img-size", "32", "--no-progress", "--patience", "0", "--workers", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate_leaves(tmp_path_factory.mktemp("leaves"), n_species=3, n_train=36, n_test=6, size=32, seed=2)


def leaves_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", "leaves", "--data-dir", str(data), "--out-dir", str(out / "subs"),
            "--runs-dir", str(out / "runs"), *ARGS, *extra]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def last_state(out: Path) -> dict:
    (ckpt,) = (out / "runs" / "leaves").glob("*/fold0/last.pt")
    return torch.load(ckpt, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(data, tmp_path):
    epochs = ["--epochs", "5"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted run goes on beside the killed one (one thread each: 2 cores are enough)
    reference = subprocess.Popen(leaves_cmd(data, straight, *epochs), cwd=REPO, env=env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(leaves_cmd(data, killed, *epochs), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((killed / "runs").glob("leaves/*/fold0/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    interrupted_at = last_state(killed)["trainer"]["epoch"]
    assert interrupted_at < 5, "the kill came too late to test resuming"

    (run_dir,) = (killed / "runs" / "leaves").iterdir()
    done = subprocess.run(leaves_cmd(data, killed, "--resume", str(run_dir)), cwd=REPO, env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resumed after epoch {interrupted_at}" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("submission: ")
    assert reference.wait(timeout=120) == 0

    a, b = last_state(straight)["trainer"], last_state(killed)["trainer"]
    assert a["epoch"] == b["epoch"] == 5
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"


@pytest.mark.slow
def test_ddp_gloo_two_processes(data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *leaves_cmd(data, tmp_path, "--epochs", "2")[1:]]
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("submission: ") == 1  # rank 0 alone writes and prints
    assert "on cpu x2" in done.stdout
    assert len(list((tmp_path / "subs" / "classify-leaves").glob("*.csv"))) == 3  # submission, OOF, test probabilities
