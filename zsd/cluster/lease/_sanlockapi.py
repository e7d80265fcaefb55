"""The only module that imports ``sanlock`` (python3-sanlock, untyped).

It gives the few calls zsd needs typed, keyword-only signatures and turns
``SanlockException`` into :class:`SanlockError` with a positive error number
(the binding reports plain errnos positive and sanlock's own codes, 2xx,
negative). Everything here blocks: callers run it in threads.

libsanlock reads ``SANLOCK_RUN_DIR`` once per process, on its first connection,
so one process can talk to one lease daemon only; tests that simulate several
hosts in one process reach the others through a proxy process implementing
:class:`SanlockApi`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from zsd.cluster.lease.authority import HostStatus

ALIGN = 1024 * 1024
SECTOR = 512

# sanlock's own result codes (src/sanlock_rv.h), as positive numbers.
AIO_TIMEOUT = 202
DBLOCK_READ, DBLOCK_WRITE, DBLOCK_LVER, DBLOCK_MBAL = 210, 211, 212, 213
LEADER_READ, LEADER_WRITE = 220, 221
LEADER_FORMAT = range(222, 230)  # DIFF, MAGIC, VERSION, SECTORSIZE, LOCKSPACE, RESOURCE, NUMHOSTS, CHECKSUM
ADDLS_INVALID_HOSTID = 231
ACQUIRE_IDLIVE, ACQUIRE_OWNED, ACQUIRE_OTHER, ACQUIRE_OWNED_RETRY = 243, 244, 245, 247
RENEW_OWNER, HOSTID_BUSY = 260, 262

_STATUS = {
    1: HostStatus.UNKNOWN,
    2: HostStatus.FREE,
    3: HostStatus.LIVE,
    4: HostStatus.FAIL,
    5: HostStatus.DEAD,
}


class SanlockError(Exception):
    """A failed sanlock call: ``code`` is an errno or a sanlock code (2xx), positive."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


@dataclass(frozen=True, kw_only=True)
class HostRecord:
    host_id: int
    generation: int
    timestamp: int
    io_timeout: int
    status: HostStatus


class SanlockApi(Protocol):
    def write_lockspace(self, *, lockspace: str, path: str, max_hosts: int, io_timeout: int) -> None: ...
    def read_lockspace(self, *, path: str) -> str: ...
    def write_resource(self, *, lockspace: str, resource: str, path: str, max_hosts: int) -> None: ...
    def read_resource_version(self, *, path: str) -> int: ...
    def read_resource_owners(self, *, lockspace: str, resource: str, path: str) -> list[HostRecord]: ...
    def add_lockspace(self, *, lockspace: str, host_id: int, path: str, io_timeout: int) -> None: ...
    def inq_lockspace(
        self, *, lockspace: str, host_id: int, path: str, wait: bool = False
    ) -> bool | None: ...
    def rem_lockspace(self, *, lockspace: str, host_id: int, path: str) -> None: ...
    def get_hosts(self, *, lockspace: str, host_id: int = 0) -> list[HostRecord]: ...
    def register(self) -> int: ...
    def unregister(self, *, fd: int) -> None: ...
    def acquire(self, *, lockspace: str, resource: str, path: str, fd: int) -> None: ...
    def release(self, *, lockspace: str, resource: str, path: str, fd: int) -> None: ...
    def held_version(self, *, lockspace: str, resource: str, fd: int) -> int | None: ...


T = TypeVar("T")


def _host(d: dict[str, Any]) -> HostRecord:
    return HostRecord(
        host_id=int(d["host_id"]),
        generation=int(d["generation"]),
        timestamp=int(d["timestamp"]),
        io_timeout=int(d.get("io_timeout", 0)),
        status=_STATUS.get(int(d.get("flags", 0)), HostStatus.UNKNOWN),
    )


class LibSanlock:
    """SanlockApi on the local lease daemon (``$SANLOCK_RUN_DIR`` or /run/sanlock)."""

    def __init__(self) -> None:
        import sanlock

        self._sl: Any = sanlock

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._sl.SanlockException as e:
            code = abs(int(e.errno)) if e.errno is not None else 0
            message = ": ".join(str(a) for a in e.args[1:]) or str(e)
            raise SanlockError(code, message) from None

    def write_lockspace(self, *, lockspace: str, path: str, max_hosts: int, io_timeout: int) -> None:
        self._call(
            lambda: self._sl.write_lockspace(
                lockspace.encode(),
                path,
                max_hosts=max_hosts,
                iotimeout=io_timeout,
                align=ALIGN,
                sector=SECTOR,
            )
        )

    def read_lockspace(self, *, path: str) -> str:
        info = self._call(lambda: self._sl.read_lockspace(path, align=ALIGN, sector=SECTOR))
        return bytes(info["lockspace"]).decode(errors="replace")

    def write_resource(self, *, lockspace: str, resource: str, path: str, max_hosts: int) -> None:
        self._call(
            lambda: self._sl.write_resource(
                lockspace.encode(),
                resource.encode(),
                [(path, 0)],
                max_hosts=max_hosts,
                align=ALIGN,
                sector=SECTOR,
            )
        )

    def read_resource_version(self, *, path: str) -> int:
        info = self._call(lambda: self._sl.read_resource(path, align=ALIGN, sector=SECTOR))
        return int(info["version"])

    def read_resource_owners(self, *, lockspace: str, resource: str, path: str) -> list[HostRecord]:
        owners = self._call(
            lambda: self._sl.read_resource_owners(
                lockspace.encode(), resource.encode(), [(path, 0)], align=ALIGN, sector=SECTOR
            )
        )
        return [_host(o) for o in owners]

    def add_lockspace(self, *, lockspace: str, host_id: int, path: str, io_timeout: int) -> None:
        self._call(lambda: self._sl.add_lockspace(lockspace.encode(), host_id, path, iotimeout=io_timeout))

    def inq_lockspace(self, *, lockspace: str, host_id: int, path: str, wait: bool = False) -> bool | None:
        held = self._call(lambda: self._sl.inq_lockspace(lockspace.encode(), host_id, path, wait=wait))
        return None if held is None else bool(held)

    def rem_lockspace(self, *, lockspace: str, host_id: int, path: str) -> None:
        self._call(lambda: self._sl.rem_lockspace(lockspace.encode(), host_id, path))

    def get_hosts(self, *, lockspace: str, host_id: int = 0) -> list[HostRecord]:
        return [_host(h) for h in self._call(lambda: self._sl.get_hosts(lockspace.encode(), host_id))]

    def register(self) -> int:
        return int(self._call(self._sl.register))

    def unregister(self, *, fd: int) -> None:
        # Closing the registration is how sanlock learns the process is gone: it
        # releases every lease the connection held, exactly as at process exit.
        os.close(fd)

    def acquire(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        self._call(lambda: self._sl.acquire(lockspace.encode(), resource.encode(), [(path, 0)], slkfd=fd))

    def release(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        self._call(lambda: self._sl.release(lockspace.encode(), resource.encode(), [(path, 0)], slkfd=fd))

    def held_version(self, *, lockspace: str, resource: str, fd: int) -> int | None:
        # inquire asks the daemon only (no storage I/O).
        for res in self._call(lambda: self._sl.inquire(slkfd=fd)):
            if bytes(res["lockspace"]).decode() == lockspace and bytes(res["resource"]).decode() == resource:
                return int(res["version"])
        return None
