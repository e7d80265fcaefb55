"""SanlockError -> zsd.errors: the only place that knows sanlock's error numbers."""

from __future__ import annotations

import errno

from zsd.cluster.lease import _sanlockapi as api
from zsd.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    Unavailable,
    ZsdError,
)

_DAEMON_GONE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN}
_IO = {
    errno.EIO,
    errno.ETIMEDOUT,
    api.AIO_TIMEOUT,
    api.DBLOCK_READ,
    api.DBLOCK_WRITE,
    api.LEADER_READ,
    api.LEADER_WRITE,
}
_HELD_ELSEWHERE = {
    api.ACQUIRE_IDLIVE,
    api.ACQUIRE_OWNED,
    api.ACQUIRE_OTHER,
    api.ACQUIRE_OWNED_RETRY,
    # Two hosts balloting at once: the other one won this round.
    api.DBLOCK_LVER,
    api.DBLOCK_MBAL,
}


def held_elsewhere(err: api.SanlockError) -> bool:
    """The lease is (or may still be) held by another host: not an error for a try."""
    return err.code in _HELD_ELSEWHERE


def translate(err: api.SanlockError, *, operation: str) -> ZsdError:
    code = err.code
    meta = {"operation": operation, "errno": str(code)}
    msg = f"lease {operation} failed: {err}"
    if code in _DAEMON_GONE:
        return Unavailable(
            f"lease daemon not reachable: {msg}", reason="LEASE_DAEMON_UNAVAILABLE", metadata=meta
        )
    if code in _IO:
        return Unavailable(msg, reason="LEASE_IO_ERROR", metadata=meta)
    if code in (errno.ENODEV, errno.EACCES, errno.EROFS):
        # sanlock reports a lease file it cannot open as ENODEV.
        return Unavailable(
            f"lease storage not accessible to the lease daemon: {msg}",
            reason="LEASE_STORAGE_INACCESSIBLE",
            metadata=meta,
        )
    if code in api.LEADER_FORMAT:
        return FailedPrecondition(
            f"lease storage is not initialised or is damaged: {msg}",
            reason="LEASE_STORAGE_INVALID",
            metadata=meta,
        )
    if code in _HELD_ELSEWHERE:
        return Conflict(msg, reason="LEASE_HELD_BY_OTHER_HOST", metadata=meta)
    if code in (api.HOSTID_BUSY, api.RENEW_OWNER):
        return Conflict(f"host id in use by another host: {msg}", reason="HOST_ID_IN_USE", metadata=meta)
    if code == api.ADDLS_INVALID_HOSTID:
        return InvalidArgument(msg, reason="INVALID_HOST_ID", field="host_id", metadata=meta)
    if code == errno.EINVAL:
        return InvalidArgument(msg, reason="INVALID_LEASE_ARGUMENT", metadata=meta)
    if code == errno.ENOENT:
        # The lockspace is unknown to the daemon: never joined, removed by sanlock
        # after renewals failed, or lost with a restarted daemon.
        return FailedPrecondition(f"not joined: {msg}", reason="LOCKSPACE_NOT_JOINED", metadata=meta)
    if code == errno.EEXIST:
        return AlreadyExists(msg, reason="LEASE_ALREADY_HELD", metadata=meta)
    if code == errno.EAGAIN:
        return Unavailable(msg, reason="LEASE_NOT_READY", metadata=meta)
    if code == errno.ENOSPC:
        # Acquire refused because the lockspace is failing (its holders are being killed).
        return Unavailable(msg, reason="LOCKSPACE_FAILING", metadata=meta)
    if code == errno.EPERM:
        return FailedPrecondition(msg, reason="LEASE_NOT_HELD", metadata=meta)
    return Internal(msg, reason="LEASE_ERROR", metadata=meta)
