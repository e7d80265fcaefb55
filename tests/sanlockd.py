"""Simulated sanlock hosts for one test process: a private daemon and a client process each.

libsanlock binds a process to one daemon (it reads ``SANLOCK_RUN_DIR`` once), so
each simulated host gets a client process, and :class:`SanlockProxy` forwards
SanlockApi calls to it. That process owns the sanlock registration, so killing it
(:meth:`SanlockHost.restart_process`) is exactly a zsd process dying: sanlock
releases its leader lease.

Every process started here is stopped by its pid in ``close``/``stop``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import multiprocessing
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from zsd.cluster.lease._sanlockapi import HostRecord, LibSanlock, SanlockError
from zsd.cluster.lease.daemon import SanlockDaemon

_CALL_THREADS_LIMIT = 16


def _serve(conn: Connection, run_dir: str) -> None:
    """The client process: runs each call in its own thread (calls block for seconds)."""
    os.environ["SANLOCK_RUN_DIR"] = run_dir  # before libsanlock's first connection
    api = LibSanlock()
    send_lock = threading.Lock()
    slots = threading.BoundedSemaphore(_CALL_THREADS_LIMIT)

    def run(call_id: int, method: str, kwargs: dict[str, Any]) -> None:
        try:
            reply = (call_id, True, getattr(api, method)(**kwargs))
        except (SanlockError, OSError) as e:
            reply = (call_id, False, e)
        finally:
            slots.release()
        with send_lock, contextlib.suppress(OSError):
            conn.send(reply)

    while True:
        try:
            call_id, method, kwargs = conn.recv()
        except (EOFError, OSError):
            # Parent gone: exiting closes our registrations, releasing their leases.
            os._exit(0)
        slots.acquire()
        threading.Thread(target=run, args=(call_id, method, kwargs), daemon=True).start()


class SanlockProxy:
    """SanlockApi implemented by a client process bound to one daemon's run dir."""

    def __init__(self, *, run_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(run_dir)), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._dead = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _read(self) -> None:
        while True:
            try:
                call_id, ok, value = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                fut = self._pending.pop(call_id, None)
            if fut is None:
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(SanlockError(errno.ECONNRESET, "lease client process died"))

    def _call(self, method: str, **kwargs: Any) -> Any:
        fut: Future[Any] = Future()
        with self._lock:
            if self._dead:
                raise SanlockError(errno.EPIPE, "lease client process is gone")
            call_id = next(self._ids)
            self._pending[call_id] = fut
        try:
            with self._send_lock:
                self._conn.send((call_id, method, kwargs))
        except OSError:
            with self._lock:
                self._pending.pop(call_id, None)
            raise SanlockError(errno.EPIPE, "lease client process is gone") from None
        return fut.result()

    def kill(self) -> None:
        """kill -9 of the client process (by pid)."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._reader.join()  # sees EOF now that the child's end is closed
        self._conn.close()

    close = kill

    # -- SanlockApi --------------------------------------------------------

    def write_lockspace(self, *, lockspace: str, path: str, max_hosts: int, io_timeout: int) -> None:
        self._call(
            "write_lockspace", lockspace=lockspace, path=path, max_hosts=max_hosts, io_timeout=io_timeout
        )

    def read_lockspace(self, *, path: str) -> str:
        return str(self._call("read_lockspace", path=path))

    def write_resource(self, *, lockspace: str, resource: str, path: str, max_hosts: int) -> None:
        self._call("write_resource", lockspace=lockspace, resource=resource, path=path, max_hosts=max_hosts)

    def read_resource_version(self, *, path: str) -> int:
        return int(self._call("read_resource_version", path=path))

    def read_resource_owners(self, *, lockspace: str, resource: str, path: str) -> list[HostRecord]:
        result: list[HostRecord] = self._call(
            "read_resource_owners", lockspace=lockspace, resource=resource, path=path
        )
        return result

    def add_lockspace(self, *, lockspace: str, host_id: int, path: str, io_timeout: int) -> None:
        self._call("add_lockspace", lockspace=lockspace, host_id=host_id, path=path, io_timeout=io_timeout)

    def inq_lockspace(self, *, lockspace: str, host_id: int, path: str, wait: bool = False) -> bool | None:
        result: bool | None = self._call(
            "inq_lockspace", lockspace=lockspace, host_id=host_id, path=path, wait=wait
        )
        return result

    def rem_lockspace(self, *, lockspace: str, host_id: int, path: str) -> None:
        self._call("rem_lockspace", lockspace=lockspace, host_id=host_id, path=path)

    def get_hosts(self, *, lockspace: str, host_id: int = 0) -> list[HostRecord]:
        result: list[HostRecord] = self._call("get_hosts", lockspace=lockspace, host_id=host_id)
        return result

    def register(self) -> int:
        return int(self._call("register"))

    def unregister(self, *, fd: int) -> None:
        self._call("unregister", fd=fd)

    def acquire(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        self._call("acquire", lockspace=lockspace, resource=resource, path=path, fd=fd)

    def release(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        self._call("release", lockspace=lockspace, resource=resource, path=path, fd=fd)

    def held_version(self, *, lockspace: str, resource: str, fd: int) -> int | None:
        result: int | None = self._call("held_version", lockspace=lockspace, resource=resource, fd=fd)
        return result


@dataclass
class SanlockHost:
    """One simulated host: its sanlock daemon and the client process zsd would be."""

    name: str
    daemon: SanlockDaemon
    proxy: SanlockProxy

    def restart_process(self) -> SanlockProxy:
        """The client process dies (kill -9) and a new one starts."""
        self.proxy.kill()
        self.proxy = SanlockProxy(run_dir=self.daemon.run_dir)
        return self.proxy

    def close(self) -> None:
        try:
            self.proxy.close()
        finally:
            # sanlock ignores SIGTERM while in a lockspace: do not wait long for it.
            self.daemon.stop(grace=0.5)


def start_hosts(base: Path, *, count: int, shim_cache: Path) -> list[SanlockHost]:
    """Starts ``count`` hosts under ``base``; on any failure stops those already started."""
    hosts: list[SanlockHost] = []
    try:
        for i in range(1, count + 1):
            daemon = SanlockDaemon(run_dir=base / f"h{i}" / "run", shim_cache=shim_cache)
            daemon.start()
            try:
                proxy = SanlockProxy(run_dir=daemon.run_dir)
            except BaseException:
                daemon.stop(grace=0.5)
                raise
            hosts.append(SanlockHost(name=f"h{i}", daemon=daemon, proxy=proxy))
    except BaseException:
        for host in hosts:
            host.close()
        raise
    return hosts
