"""Real servers in tests: a free loopback port, a make target started as a user starts it and stopped whatever
it spawned, a page fetched once the server answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent  # the environment running the tests: make's VENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_argv(target: str, *variables: str) -> list[str]:
    """``make TARGET VAR=...`` on this environment, its setup prerequisite taken as done (``-o``)."""
    return ["make", "--no-print-directory", "-o", f"{VENV}/.installed", target, f"VENV={VENV}", *variables]


@contextlib.contextmanager
def make_server(target: str, port: int, env: dict, *variables: str) -> Iterator[subprocess.Popen]:
    """``make TARGET PORT=port ...`` in a process group of its own, stopped on exit: SIGTERM to the group, SIGKILL
    after 10 s, then SIGKILL to whatever of it is left."""
    proc = subprocess.Popen(make_argv(target, f"PORT={port}", *variables), cwd=REPO, env={**os.environ, **env},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def fetch(url: str, proc: subprocess.Popen, timeout: float = 90) -> str:
    """The body at ``url`` once the server answers (polled every 0.2 s); fails with the server's output if it
    exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"{url} never answered:\n{proc.stdout.read()[-3000:]}") from None
            time.sleep(0.2)


def answers_elsewhere(port: int) -> bool:
    """Whether ``port`` accepts a connection on this machine's network address (not the loopback); ``False``
    when the machine has none."""
    with contextlib.suppress(OSError):
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            with socket.socket() as s:
                s.settimeout(2)
                return s.connect_ex((address, port)) == 0
    return False
