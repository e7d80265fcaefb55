"""A stateful in-memory Authority for unit tests of leader election and HA logic.

One :class:`FakeLeaseStorage` is the shared storage *and* every simulated host's
lease daemon; each :class:`FakeAuthority` is one zsd process on one host (several
processes of a host share its daemon, as a restarted zsd shares sanlock). Time is
the clock passed in (``trio.current_time`` under a MockClock gives virtual time).

What it models, as sanlock does: host-id leases renewed every renewal_interval;
peers see a host FAIL after renewal_fail and DEAD after host_dead without renewal;
the leader lease's version goes up by one on every acquisition by any host; a
lease whose owner is alive (or failing but not dead) cannot be taken; process
death releases its lease; renewal failure past renewal_fail kills the lease
holders (sanlock's recovery) and drops the lockspace; a crashed daemon renews
nothing and kills nobody.

Deliberate differences: calls return at once (a real join takes 2..5 io timeouts;
a join of a host id whose previous owner is not yet dead fails instead of
waiting); no UNKNOWN host state; own renewal seen without sanlock's one-renewal lag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zsd.cluster.lease.authority import (
    HostState,
    HostStatus,
    LeaderRecord,
    LeaseConfig,
    Renewal,
    renewal_status,
)
from zsd.cluster.lease.timing import LeaseTiming
from zsd.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)


@dataclass(kw_only=True)
class _Delta:
    """One host id's delta lease on storage."""

    owner: tuple[str, int]  # (host name, daemon incarnation)
    generation: int
    anchor: float  # renewals happen at anchor + k * renewal_interval
    stopped_at: float | None = None  # renewals stopped (daemon crash or storage failure)
    freed: bool = False

    def last_renewal(self, now: float, interval: float) -> float:
        end = now if self.stopped_at is None else min(self.stopped_at, now)
        return self.anchor + math.floor((end - self.anchor) / interval) * interval


@dataclass(kw_only=True)
class _Leader:
    owner: int | None = None
    owner_generation: int = 0
    lver: int = 0
    holder: FakeAuthority | None = None


@dataclass(kw_only=True)
class _Daemon:
    name: str
    incarnation: int = 1
    alive: bool = True
    renewal_failing: bool = False
    host_id: int | None = None
    processes: list[FakeAuthority] = field(default_factory=list)


class FakeLeaseStorage:
    """Shared lease storage plus every host's lease daemon, in memory."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._config: LeaseConfig | None = None
        self._deltas: dict[int, _Delta] = {}
        self._leader = _Leader()
        self._daemons: dict[str, _Daemon] = {}

    # -- fault injection -----------------------------------------------------

    def crash_daemon(self, host: str) -> None:
        """kill -9 of the host's lease daemon: renewals stop, nobody kills the holders."""
        daemon = self._daemon(host)
        if not daemon.alive:
            return
        self._stop_renewal(daemon)
        daemon.alive = False
        daemon.host_id = None

    def restart_daemon(self, host: str) -> None:
        """A new daemon instance: in no lockspace; its old host lease must expire first."""
        daemon = self._daemon(host)
        if daemon.alive:
            return
        daemon.alive = True
        daemon.renewal_failing = False
        daemon.incarnation += 1

    def fail_renewal(self, host: str) -> None:
        """The host loses its storage: its renewals (and all its lease I/O) fail."""
        daemon = self._daemon(host)
        self._stop_renewal(daemon)
        daemon.renewal_failing = True

    def restore_renewal(self, host: str) -> None:
        """Storage is back. Too late if sanlock's recovery already dropped the lockspace."""
        daemon = self._daemon(host)
        self.tick()
        daemon.renewal_failing = False
        if daemon.alive and daemon.host_id is not None:
            delta = self._deltas[daemon.host_id]
            delta.anchor, delta.stopped_at = self.clock(), None

    # -- what a daemon or storage would do -------------------------------------

    def _daemon(self, host: str) -> _Daemon:
        return self._daemons.setdefault(host, _Daemon(name=host))

    def _stop_renewal(self, daemon: _Daemon) -> None:
        if daemon.alive and daemon.host_id is not None:
            delta = self._deltas[daemon.host_id]
            if delta.stopped_at is None:
                delta.stopped_at = self.clock()

    @property
    def timing(self) -> LeaseTiming:
        return self.config.timing

    @property
    def config(self) -> LeaseConfig:
        if self._config is None:
            raise FailedPrecondition("lease storage is not initialised", reason="LEASE_STORAGE_INVALID")
        return self._config

    def tick(self) -> None:
        """sanlock's recovery: renewal_fail after its last renewal, a daemon whose
        renewals fail kills its lease holders and drops the lockspace."""
        now = self.clock()
        for daemon in self._daemons.values():
            if not (daemon.alive and daemon.renewal_failing and daemon.host_id is not None):
                continue
            delta = self._deltas[daemon.host_id]
            if now - delta.last_renewal(now, self.timing.renewal_interval) <= self.timing.renewal_fail:
                continue
            for proc in daemon.processes:
                if self._leader.holder is proc:
                    # Killed; its release cannot reach the failed storage, so the
                    # record keeps naming this host until peers see it dead.
                    self._leader.holder = None
                    proc.killed = True
            daemon.host_id = None

    def last_renewal(self, host_id: int) -> float:
        return self._deltas[host_id].last_renewal(self.clock(), self.timing.renewal_interval)

    def status_of(self, host_id: int, *, observer: int | None) -> HostStatus:
        delta = self._deltas.get(host_id)
        if delta is None or delta.freed:
            return HostStatus.FREE
        if host_id == observer:
            return HostStatus.LIVE  # as sanlock: a host always reports itself live
        age = self.clock() - self.last_renewal(host_id)
        if age > self.timing.host_dead:
            return HostStatus.DEAD
        if age > self.timing.renewal_fail:
            return HostStatus.FAIL
        return HostStatus.LIVE


class FakeAuthority:
    """One zsd process on host ``host``, using the shared fake storage."""

    def __init__(self, *, storage: FakeLeaseStorage, config: LeaseConfig, host: str) -> None:
        self._storage = storage
        self._config = config
        self._timing = config.timing
        self._host = host
        self._daemon = storage._daemon(host)
        self._daemon.processes.append(self)
        self._host_id: int | None = None
        self._generation: int | None = None
        self._last_renewal: float | None = None
        self.killed = False
        """Set when sanlock's recovery (or :meth:`kill`) ended this process."""

    @property
    def config(self) -> LeaseConfig:
        return self._config

    @property
    def host_id(self) -> int | None:
        return self._host_id

    def now(self) -> float:
        return self._storage.clock()

    def kill(self) -> None:
        """kill -9 of this process: the daemon releases its leader lease if it can write."""
        self._drop_leader()
        self.killed = True
        self._daemon.processes.remove(self)

    # -- checks shared by the operations -------------------------------------

    def _alive(self) -> None:
        self._storage.tick()
        if self.killed:
            raise FailedPrecondition("this process was killed", reason="PROCESS_KILLED")

    def _daemon_up(self) -> None:
        self._alive()
        if not self._daemon.alive:
            raise Unavailable("lease daemon not reachable", reason="LEASE_DAEMON_UNAVAILABLE")

    def _storage_up(self) -> None:
        self._daemon_up()
        if self._daemon.renewal_failing:
            raise Unavailable("lease storage I/O fails", reason="LEASE_IO_ERROR")

    def _joined(self) -> int:
        if self._host_id is None:
            raise FailedPrecondition("this host has not joined the lockspace", reason="LOCKSPACE_NOT_JOINED")
        self._daemon_up()
        delta = self._storage._deltas.get(self._host_id)
        if self._daemon.host_id != self._host_id or delta is None or delta.generation != self._generation:
            raise FailedPrecondition("the lockspace was lost", reason="LOCKSPACE_NOT_JOINED")
        return self._host_id

    def _drop_leader(self) -> None:
        leader = self._storage._leader
        if leader.holder is not self:
            return
        leader.holder = None
        if self._daemon.alive and not self._daemon.renewal_failing:
            leader.owner = None

    # -- Authority -----------------------------------------------------------

    async def init_storage(self, *, overwrite: bool = False) -> None:
        self._storage_up()
        storage = self._storage
        if storage._config is not None and not overwrite:
            raise AlreadyExists(
                "a lockspace already exists; overwriting it breaks every host using it",
                reason="LEASE_STORAGE_EXISTS",
                field="shared_dir",
            )
        storage._config = self._config
        storage._deltas = {}
        storage._leader = _Leader()

    async def join(self, host_id: int) -> None:
        if not 1 <= host_id <= self._config.max_hosts:
            raise InvalidArgument(
                f"host id must be 1..{self._config.max_hosts}", reason="INVALID_HOST_ID", field="host_id"
            )
        if self._host_id is not None:
            if self._host_id == host_id:
                return
            raise FailedPrecondition(f"already joined as host {self._host_id}", reason="ALREADY_JOINED")
        self._storage_up()
        storage, daemon = self._storage, self._daemon
        storage.config  # noqa: B018 - raises when not initialised
        if daemon.host_id is not None and daemon.host_id != host_id:
            raise FailedPrecondition(
                "this host's lease daemon is in the lockspace with another host id",
                reason="LOCKSPACE_JOINED_AS_OTHER_HOST",
            )
        if daemon.host_id is None:
            self._take_host_id(host_id)
        self._host_id = host_id
        self._generation = storage._deltas[host_id].generation
        self._last_renewal = storage.last_renewal(host_id)

    def _take_host_id(self, host_id: int) -> None:
        storage, daemon = self._storage, self._daemon
        now = storage.clock()
        old = storage._deltas.get(host_id)
        if (
            old is not None
            and not old.freed
            and storage.status_of(host_id, observer=None) is not HostStatus.DEAD
        ):
            if old.owner[0] == daemon.name:
                raise Unavailable(
                    "this host's previous lease on the host id has not expired yet",
                    reason="HOST_LEASE_NOT_EXPIRED",
                )
            raise Conflict(f"host id {host_id} is in use by another host", reason="HOST_ID_IN_USE")
        generation = old.generation + 1 if old is not None else 1
        storage._deltas[host_id] = _Delta(
            owner=(daemon.name, daemon.incarnation), generation=generation, anchor=now
        )
        daemon.host_id = host_id

    async def leave(self) -> None:
        if self._host_id is None:
            return
        await self.release_leader()
        self._daemon_up()
        if self._daemon.host_id == self._host_id:
            self._storage_up()
            self._storage._deltas[self._host_id].freed = True
            self._daemon.host_id = None
        self._host_id = self._generation = self._last_renewal = None

    async def host_states(self) -> Mapping[int, HostState]:
        host_id = self._joined()
        storage = self._storage
        return {
            hid: HostState(
                host_id=hid,
                status=storage.status_of(hid, observer=host_id),
                generation=delta.generation,
                renewal_timestamp=int(storage.last_renewal(hid)),
            )
            for hid, delta in sorted(storage._deltas.items())
            if not delta.freed
        }

    async def renewal(self) -> Renewal:
        self._alive()
        if self._host_id is None:
            raise FailedPrecondition("this host has not joined the lockspace", reason="LOCKSPACE_NOT_JOINED")
        failure = ""
        try:
            host_id = self._joined()
        except (Unavailable, FailedPrecondition) as e:
            failure = e.reason
        else:
            observed = self._storage.last_renewal(host_id)
            if self._last_renewal is None or observed > self._last_renewal:
                self._last_renewal = observed
        return renewal_status(self._timing, now=self.now(), last_renewal=self._last_renewal, failure=failure)

    async def leader(self) -> LeaderRecord:
        self._storage_up()
        leader = self._storage._leader
        return LeaderRecord(owner=leader.owner, epoch=leader.lver)

    async def acquire_leader(self) -> int | None:
        host_id = self._joined()
        leader = self._storage._leader
        if leader.holder is self:
            return leader.lver
        self._storage_up()
        if leader.owner is not None and not self._owner_gone(leader):
            return None
        leader.owner, leader.owner_generation, leader.holder = host_id, self._generation or 0, self
        leader.lver += 1
        return leader.lver

    def _owner_gone(self, leader: _Leader) -> bool:
        assert leader.owner is not None
        delta = self._storage._deltas.get(leader.owner)
        if delta is None or delta.freed or delta.generation != leader.owner_generation:
            return True
        if leader.owner == self._host_id:
            return leader.holder is None  # held by no live process of ours
        return self._storage.status_of(leader.owner, observer=self._host_id) is HostStatus.DEAD

    async def release_leader(self) -> None:
        self._alive()
        if self._storage._leader.holder is not self:
            return
        self._storage_up()
        self._drop_leader()

    async def aclose(self) -> None:
        if self.killed:
            return
        self._drop_leader()
        self._daemon.processes.remove(self)
        self.killed = True
