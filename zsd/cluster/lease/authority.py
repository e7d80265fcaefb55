"""The Authority interface: who may act as leader, and which hosts are really gone.

One lockspace per cluster on shared storage; every host holds a host-id lease in
it while its lease daemon renews it. The leader is whoever holds the ``leader``
lease; the lease version at acquisition is the *epoch* that stamps every write.
Implementations: :class:`~zsd.cluster.lease.sanlock_authority.SanlockAuthority`
(real) and :class:`~zsd.cluster.lease.fake.FakeAuthority` (tests); both pass the
same contract tests.

Failures are :mod:`zsd.errors` categories: ``Unavailable`` (lease daemon or
storage unreachable; retrying may help), ``FailedPrecondition`` (not joined,
storage not initialised), ``Conflict`` (host id used by another host),
``InvalidArgument``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zsd.cluster.lease.timing import SANLOCK_WATCHDOG_FIRE_TIMEOUT, LeaseTiming, timing
from zsd.errors import InvalidArgument

# sanlock's limits for 512-byte sectors and 1 MiB alignment (the layout we write).
MAX_HOSTS = 2000
_MAX_NAME = 48


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    """Where a cluster's leases live and how fast its lease daemons must be."""

    shared_dir: Path
    lockspace: str = "zsd"
    io_timeout: int = 10
    max_hosts: int = MAX_HOSTS
    watchdog_fire_timeout: int = SANLOCK_WATCHDOG_FIRE_TIMEOUT
    """Must equal the lease daemons' (compiled in as 60 for sanlock 3.8.5)."""

    def __post_init__(self) -> None:
        if not 0 < len(self.lockspace.encode()) <= _MAX_NAME:
            raise InvalidArgument(
                f"lockspace name must be 1..{_MAX_NAME} bytes", reason="INVALID_LOCKSPACE", field="lockspace"
            )
        if not 1 <= self.max_hosts <= MAX_HOSTS:
            raise InvalidArgument(
                f"max_hosts must be 1..{MAX_HOSTS}", reason="INVALID_MAX_HOSTS", field="max_hosts"
            )
        if self.io_timeout < 1:
            raise InvalidArgument(
                "io_timeout must be >= 1 s", reason="INVALID_IO_TIMEOUT", field="io_timeout"
            )

    @property
    def lease_dir(self) -> Path:
        return self.shared_dir / "leases"

    @property
    def ids_path(self) -> Path:
        """The lockspace: one delta lease (512-byte sector) per host id."""
        return self.lease_dir / "ids"

    @property
    def leader_path(self) -> Path:
        """The ``leader`` paxos resource lease."""
        return self.lease_dir / "leader"

    @property
    def timing(self) -> LeaseTiming:
        return timing(self.io_timeout, watchdog_fire_timeout=self.watchdog_fire_timeout)


class HostStatus(enum.Enum):
    """A host's delta lease as seen from here (sanlock's HOST_* flags)."""

    UNKNOWN = "unknown"
    """Seen, but not yet watched long enough to tell (just after joining)."""
    FREE = "free"
    """The host id is not in use (never joined, or left cleanly)."""
    LIVE = "live"
    """Renewed within renewal_fail. A host always reports itself live."""
    FAIL = "fail"
    """Not renewed for renewal_fail: it is killing its lease holders."""
    DEAD = "dead"
    """Not renewed for host_dead: its leases may be taken over."""


@dataclass(frozen=True, kw_only=True)
class HostState:
    host_id: int
    status: HostStatus
    generation: int
    """Bumped each time the host id is (re)joined; tells instances of a host apart."""
    renewal_timestamp: int
    """The last renewal timestamp written by that host, in *its* monotonic seconds;
    only its changes mean something here."""


@dataclass(frozen=True, kw_only=True)
class LeaderRecord:
    """The leader lease as stored on shared storage."""

    owner: int | None
    """Host id holding it, or None when released."""
    epoch: int
    """The version of the latest acquisition (stays after release)."""


@dataclass(frozen=True, kw_only=True)
class Renewal:
    """The health of our own host-id lease at ``checked_at`` (authority clock)."""

    healthy: bool
    checked_at: float
    last_renewal: float | None
    """The newest renewal known to have reached storage; None if none seen yet."""
    valid_until: float
    """A leader must have *completed* its last write by this time: no other host can
    acquire the leader lease earlier. Never moves backwards for one joined lease."""
    reason: str = ""
    """Why unhealthy (an UPPER_SNAKE reason), empty when healthy."""


def renewal_status(
    lease_timing: LeaseTiming, *, now: float, last_renewal: float | None, failure: str = ""
) -> Renewal:
    """Derives health and the leader deadline from the newest observed renewal.

    Another host takes over only after watching our delta lease stay unchanged for
    host_dead (its own clock, counted from when it *saw* the last change, which is
    after we wrote it), so ``last_renewal + host_dead`` is the earliest takeover;
    the safety margin absorbs clock-rate differences and scheduling.
    """
    if last_renewal is None:
        return Renewal(
            healthy=False,
            checked_at=now,
            last_renewal=None,
            valid_until=now,
            reason=failure or "NO_RENEWAL_SEEN",
        )
    valid_until = last_renewal + lease_timing.host_dead - lease_timing.safety_margin
    if not failure and now - last_renewal > lease_timing.stale_after:
        failure = "RENEWAL_STALE"
    return Renewal(
        healthy=not failure,
        checked_at=now,
        last_renewal=last_renewal,
        valid_until=valid_until,
        reason=failure,
    )


class Authority(Protocol):
    """One process's view of the cluster's lease authority, for one host.

    Every method may block for seconds on storage (a real implementation runs them
    in threads); none may be abandoned half-way, so cancellation waits for them.
    """

    @property
    def config(self) -> LeaseConfig: ...

    @property
    def host_id(self) -> int | None:
        """The host id joined with, or None."""
        ...

    def now(self) -> float:
        """The clock ``Renewal`` times are on (CLOCK_MONOTONIC for sanlock)."""
        ...

    async def init_storage(self, *, overwrite: bool = False) -> None:
        """Writes a new lockspace and leader lease on shared storage (``zsd cluster init``).

        Refuses (AlreadyExists) if a lockspace is already there unless ``overwrite``:
        overwriting live leases breaks every host using them.
        """
        ...

    async def join(self, host_id: int) -> None:
        """Acquires the host-id lease; returns when it is held (2..5 io timeouts).

        Idempotent: if this host's lease daemon already holds ``host_id`` (a restarted
        process), that membership is adopted.
        """
        ...

    async def leave(self) -> None:
        """Releases the leader lease if held, then the host-id lease."""
        ...

    async def acquire_leader(self) -> int | None:
        """Tries to take the leader lease; returns the new epoch, or None if another
        host holds it (or may still hold it: its host lease is failing but not dead).

        Returns the current epoch if this process already holds it. Every new
        acquisition, by any host, has an epoch exactly one above the previous one.
        """
        ...

    async def release_leader(self) -> None:
        """Releases the leader lease (after the last write completed). Idempotent."""
        ...

    async def leader(self) -> LeaderRecord:
        """Who holds the leader lease according to shared storage, and its epoch."""
        ...

    async def host_states(self) -> Mapping[int, HostState]:
        """Every host id in use (live, failing, dead or unknown), by host id; a host
        id left cleanly (free) is not listed.

        Raises Unavailable (reason LEASE_NOT_READY) for about one renewal interval
        after this host joined, until its lease daemon has looked at the others.
        """
        ...

    async def renewal(self) -> Renewal:
        """The health of our own host lease now. Does not raise for daemon or
        storage failures: those make it unhealthy (``reason`` says why)."""
        ...

    async def aclose(self) -> None:
        """Ends this process's use: the leader lease is dropped as at process exit.
        Host membership belongs to the lease daemon and stays."""
        ...
