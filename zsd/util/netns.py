"""A netlink socket in another network namespace, made without forking.

pyroute2's ``NetNS`` forks a child that enters the namespace and passes the socket
back; under zsd (gRPC's threads, trio's) that child crashed now and then (SIGSEGV),
and DHCP for a port group stayed down until a later retry happened to work. Here the
calling thread enters the namespace itself (``setns`` changes only the calling
thread), makes the socket, and goes back: a socket stays bound to the namespace it
was made in, whoever uses it later.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def made_in(name: str, make: Callable[[], Any], *, run_dir: Path = NETNS_RUN_DIR) -> Any:
    """``make()`` called with this thread in network namespace ``name`` (``ip netns``
    naming); the thread is back in its own namespace before this returns or raises."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(run_dir / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return make()
        finally:
            # A thread left in the wrong namespace would make every later socket of
            # whatever runs on it there: failing to go back is fatal to the process.
            try:
                _setns(back)
            except OSError:
                os.abort()
    finally:
        os.close(back)
