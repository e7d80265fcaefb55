"""A private sanlock daemon per simulated host — for tests and the dev cluster only.

Real hosts run ``sanlock.service`` (with wdmd and a watchdog device). This launcher
runs ``sanlock daemon`` the way one machine can host several of them:

- its own run dir (``SANLOCK_RUN_DIR``, for the daemon and for its clients), so
  each simulated host has its own socket, pid file and lockspaces;
- ``-w 0``: no watchdog device here. Nothing resets a host whose renewals fail, so
  zsd's own ``valid_until`` deadline is what keeps a stale leader from writing;
- ``-l 0``: no mlockall; ``-L -1 -S -1``: nothing written to /var/log/sanlock.log
  (sanlock 3.8.5 still creates it, empty: the path is compiled in) or syslog; the
  log goes to ``sanlock.log`` in the run dir (``-D``: foreground, log to stderr);
- ``-U root -G root`` by default: lease files under private temp dirs are not
  reachable by the ``sanlock`` user that sanlock.service uses;
- an LD_PRELOAD shim whose ``setrlimit`` turns EPERM into success: without
  CAP_SYS_RESOURCE (containers, sandboxes) the daemon otherwise refuses to start
  ("cannot set the limits for memlock"). It is compiled with ``cc`` on first use,
  so the machine needs gcc and libc6-dev.

The daemon runs in its own session and is stopped by its pid (and its process
group, which holds its helper); nothing outlives :meth:`SanlockDaemon.stop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from zsd.errors import FailedPrecondition, Unavailable

SOCKET_NAME = "sanlock.sock"

SHIM_SOURCE = r"""
/* setrlimit that reports success when the kernel says EPERM: lets sanlock start
 * without CAP_SYS_RESOURCE. Test and dev environments only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
    int (*real)(__rlimit_resource_t, const struct rlimit *) = dlsym(RTLD_NEXT, "setrlimit");
    int rc = real(resource, rlim);
    if (rc != 0 && errno == EPERM)
        return 0;
    return rc;
}
"""


def build_shim(cache_dir: Path) -> Path:
    """Compiles the setrlimit shim into ``cache_dir`` once per source version."""
    digest = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]
    target = cache_dir / f"setrlimit-shim-{digest}.so"
    if target.exists():
        return target
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FailedPrecondition(
            "no C compiler: install gcc and libc6-dev to run private sanlock daemons",
            reason="CC_MISSING",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = cache_dir / f"setrlimit-shim-{digest}.c"
    source.write_text(SHIM_SOURCE)
    # Build under a private name, then rename: concurrent builders never see half a file.
    partial_target = cache_dir / f".{target.name}.{os.getpid()}"
    proc = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(partial_target), str(source), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        partial_target.unlink(missing_ok=True)
        raise FailedPrecondition(
            f"building the setrlimit shim failed: {proc.stderr.strip()}", reason="CC_FAILED"
        )
    partial_target.replace(target)
    return target


class SanlockDaemon:
    """One private ``sanlock daemon``; clients must use :attr:`client_env`."""

    def __init__(
        self,
        *,
        run_dir: Path,
        shim_cache: Path | None = None,
        user: str = "root",
        group: str = "root",
        executable: str = "sanlock",
    ) -> None:
        self.run_dir = run_dir
        self._shim_cache = shim_cache if shim_cache is not None else run_dir / "shim"
        self._user = user
        self._group = group
        self._executable = executable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.run_dir / SOCKET_NAME

    @property
    def log_path(self) -> Path:
        return self.run_dir / "sanlock.log"

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for a client process of this daemon (libsanlock reads it once)."""
        return {"SANLOCK_RUN_DIR": str(self.run_dir)}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout: float = 10.0) -> None:
        if self.running():
            return
        binary = shutil.which(self._executable)
        if binary is None:
            raise FailedPrecondition("sanlock is not installed (package sanlock)", reason="SANLOCK_MISSING")
        shim = build_shim(self._shim_cache)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)  # a stale socket would look ready
        env = {**os.environ, **self.client_env, "LD_PRELOAD": str(shim)}
        argv = [binary, "daemon", "-D", "-w", "0", "-l", "0", "-L", "-1", "-S", "-1"]
        argv += ["-U", self._user, "-G", self._group]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise Unavailable(
                    f"sanlock daemon exited with {self._proc.returncode}: {self._log_tail()}",
                    reason="SANLOCK_START_FAILED",
                )
            if self._accepts():
                return
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"sanlock daemon not ready within {timeout} s: {self._log_tail()}",
                    reason="SANLOCK_START_FAILED",
                )
            time.sleep(0.02)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9 of the daemon alone (fault injection); its leases stop being renewed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, *, grace: float = 2.0) -> None:
        """Stops the daemon and its helper. sanlock ignores SIGTERM while it is in a
        lockspace, so after ``grace`` seconds the whole process group gets SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                # Still unreaped, so its pid is still its process group's id (its own
                # session), which also holds the helper: kill both.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # A daemon that died alone (kill()) takes its helper with it: the helper
        # exits when its pipe from the daemon closes.
        for leftover in (self.socket_path, self.run_dir / "sanlock.pid"):
            leftover.unlink(missing_ok=True)

    def __enter__(self) -> SanlockDaemon:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
