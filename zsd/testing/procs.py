"""Processes the dev cluster started, addressed by pid and guarded against pid reuse.

A pid alone is not an identity: once a process is gone the kernel may give its
number to an unrelated process, and ``devcluster down`` may run long after ``up``
exited. So every pid is kept together with the process's start time, and a signal
is only sent while both still match. Nothing here looks processes up by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

# psutil derives start times from boot time + clock ticks; the same process always
# reads the same value, a recycled pid almost never does.
_START_TIME_SLACK = 0.05


@dataclass(frozen=True, kw_only=True)
class ProcRef:
    pid: int
    started_at: float

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        return cls(pid=pid, started_at=psutil.Process(pid).create_time())

    def _process(self) -> psutil.Process | None:
        """The live process, or None when it exited, is a zombie, or the pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started_at) > _START_TIME_SLACK:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc

    def alive(self) -> bool:
        return self._process() is not None

    def stopped(self) -> bool:
        """True while the process is held by SIGSTOP."""
        proc = self._process()
        try:
            return proc is not None and proc.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    def signal(self, sig: int) -> bool:
        """Sends ``sig`` if this is still the same process; returns whether it was sent."""
        proc = self._process()
        if proc is None:
            return False
        try:
            proc.send_signal(sig)  # psutil re-checks the start time itself
        except psutil.Error:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL to the process and its process group when it leads one (our daemons
        run in their own sessions, so helpers they forked die with them)."""
        if self._process() is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, signal.SIGKILL)
                return
        self.signal(signal.SIGKILL)


def wait_gone(refs: Iterable[ProcRef], timeout: float, *, reap: Callable[[], None] = lambda: None) -> bool:
    """Waits until none of ``refs`` is alive; ``reap`` collects our own children (a
    zombie counts as gone, but leaving it unreaped would leak it)."""
    pending = list(refs)
    deadline = time.monotonic() + timeout
    while True:
        reap()
        pending = [r for r in pending if r.alive()]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(refs: Iterable[ProcRef], *, grace: float, reap: Callable[[], None] = lambda: None) -> None:
    """SIGTERM to all at once, SIGKILL (with their process groups) to whoever is left
    after ``grace`` seconds. A SIGSTOPped process acts on SIGTERM only once continued,
    so it also gets SIGCONT (as systemd does)."""
    live = [r for r in refs if r.alive()]
    for ref in live:
        ref.signal(signal.SIGTERM)
        ref.signal(signal.SIGCONT)
    if wait_gone(live, grace, reap=reap):
        return
    for ref in live:
        ref.kill_group()
    wait_gone(live, 5.0, reap=reap)


class NotifySocket:
    """The systemd notify socket a supervisor owns: zsd sends READY=1 to it once serving."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, *, deadline: float, alive: Callable[[], bool]) -> bool:
        """True once ``line`` arrived; False if the process died or the deadline passed."""
        while line not in self.messages:
            if not alive():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sock.settimeout(min(remaining, 0.1))
            with contextlib.suppress(TimeoutError):
                self.messages.extend(self._sock.recv(65536).decode(errors="replace").split("\n"))
        return True

    def close(self) -> None:
        # zsd ignores send errors (sdnotify), so later STATUS updates to a removed
        # socket are harmless.
        self._sock.close()
        self.path.unlink(missing_ok=True)
