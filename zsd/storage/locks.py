"""Named locks that hold across tasks of this process and across hosts.

fcntl record locks work on local filesystems and on the shared ones zsd pools
use (NFSv4, CephFS, GFS2), but they belong to the process, not the task: two
tasks of one zsd would both "get" the same lock. So each name also has a trio
lock, taken first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import trio

POLL = 0.05


class FileLocks:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._local: dict[str, trio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._local.setdefault(key, trio.Lock())
        async with lock:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        # Polling keeps the wait cancellable (a blocked lockf in a
                        # thread could not be taken back).
                        await trio.sleep(POLL)
                yield
            finally:
                os.close(fd)  # releases the fcntl lock
