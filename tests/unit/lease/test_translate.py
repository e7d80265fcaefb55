"""SanlockError -> zsd.errors categories."""

from __future__ import annotations

import errno

import pytest

from zsd.cluster.lease._sanlockapi import SanlockError
from zsd.cluster.lease._translate import held_elsewhere, translate
from zsd.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    Unavailable,
    ZsdError,
)


@pytest.mark.parametrize(
    ("code", "category", "reason"),
    [
        (errno.ECONNREFUSED, Unavailable, "LEASE_DAEMON_UNAVAILABLE"),
        (errno.EPIPE, Unavailable, "LEASE_DAEMON_UNAVAILABLE"),
        (202, Unavailable, "LEASE_IO_ERROR"),  # SANLK_AIO_TIMEOUT
        (221, Unavailable, "LEASE_IO_ERROR"),  # SANLK_LEADER_WRITE
        (errno.ENODEV, Unavailable, "LEASE_STORAGE_INACCESSIBLE"),
        (223, FailedPrecondition, "LEASE_STORAGE_INVALID"),  # SANLK_LEADER_MAGIC
        (243, Conflict, "LEASE_HELD_BY_OTHER_HOST"),  # SANLK_ACQUIRE_IDLIVE
        (262, Conflict, "HOST_ID_IN_USE"),  # SANLK_HOSTID_BUSY
        (231, InvalidArgument, "INVALID_HOST_ID"),
        (errno.ENOENT, FailedPrecondition, "LOCKSPACE_NOT_JOINED"),
        (errno.EEXIST, AlreadyExists, "LEASE_ALREADY_HELD"),
        (errno.EAGAIN, Unavailable, "LEASE_NOT_READY"),
        (errno.ENOSPC, Unavailable, "LOCKSPACE_FAILING"),
        (errno.EPERM, FailedPrecondition, "LEASE_NOT_HELD"),
        (999, Internal, "LEASE_ERROR"),
    ],
)
def test_categories(code: int, category: type[ZsdError], reason: str) -> None:
    err = translate(SanlockError(code, "Sanlock failure: details"), operation="join")
    assert type(err) is category
    assert err.reason == reason
    assert err.metadata == {"operation": "join", "errno": str(code)}
    assert "join" in err.message


def test_held_elsewhere_covers_lost_ballots() -> None:
    assert all(held_elsewhere(SanlockError(c, "")) for c in (243, 244, 245, 247, 212, 213))
    assert not held_elsewhere(SanlockError(errno.EIO, ""))
