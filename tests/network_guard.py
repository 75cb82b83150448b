"""The socket layer, blocked: for tests of code that talks to Kaggle.

With the network up, such a test would really log in and pass or fail by where it runs. Blocked, every
client call meets what an offline machine gives (name resolution fails, connections are refused), and
``attempts`` lists what was tried, so a test can prove the real client got as far as the network.
Used in-process through the ``no_network`` fixture (conftest.py) and in child processes through
:data:`CHILD_MAIN` (``python -c CHILD_MAIN <pipelines argv>``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

MESSAGE = "network blocked by the test suite"


def block(set_attr: Callable[[object, str, object], None] = setattr) -> list[tuple]:
    """Make name resolution and every non-Unix connect raise; returns the list the attempts are added to."""
    attempts: list[tuple] = []
    connect = socket.socket.connect

    def no_dns(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise socket.gaierror(socket.EAI_NONAME, MESSAGE)

    def no_connect(sock, address, *args, **kwargs):
        if sock.family == socket.AF_UNIX:
            return connect(sock, address, *args, **kwargs)
        attempts.append(("connect", address))
        raise OSError(errno.ENETUNREACH, MESSAGE)

    set_attr(socket, "getaddrinfo", no_dns)
    set_attr(socket.socket, "connect", no_connect)
    set_attr(socket.socket, "connect_ex", no_connect)
    return attempts


CHILD_MAIN = (
    "import runpy, sys\n"
    f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    "import network_guard\n"
    "network_guard.block()\n"
    "del sys.path[0]\n"
    "runpy.run_module('pipelines', run_name='__main__', alter_sys=True)\n"
)
