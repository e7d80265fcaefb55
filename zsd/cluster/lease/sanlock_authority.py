"""SanlockAuthority: the Authority on a real sanlock daemon.

Every sanlock call runs in a worker thread under a CapacityLimiter (calls block on
storage for seconds), and is never abandoned on cancellation: an acquire that
finished after we stopped listening would leave a lease held without anyone
knowing. The leader lease belongs to the sanlock registration (a connection) of
this process: if the process dies, sanlock releases it at once.

Loss of the host lease is detected by polling (:meth:`renewal`), not through
sanlock's killpath: killpath runs once, only when sanlock already starts killing
lease holders (8 io timeouts after the last renewal), and could only reach us by a
signal. Without a killpath sanlock sends SIGTERM at that point (SIGKILL after its
grace period), which is the right backstop for a leader that failed to step down.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

import trio

from zsd.cluster.lease._sanlockapi import ALIGN, SanlockApi, SanlockError
from zsd.cluster.lease._translate import held_elsewhere, translate
from zsd.cluster.lease.authority import (
    HostState,
    HostStatus,
    LeaderRecord,
    LeaseConfig,
    Renewal,
    renewal_status,
)
from zsd.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, ZsdError

LEADER = "leader"
_DEFAULT_THREADS = 4

T = TypeVar("T")


class SanlockAuthority:
    def __init__(
        self, *, config: LeaseConfig, api: SanlockApi, limiter: trio.CapacityLimiter | None = None
    ) -> None:
        self._config = config
        self._timing = config.timing
        self._api = api
        # Several threads, so a renewal poll is not stuck behind a join or an acquire.
        self._limiter = limiter if limiter is not None else trio.CapacityLimiter(_DEFAULT_THREADS)
        self._leader_lock = trio.Lock()
        self._host_id: int | None = None
        self._generation: int | None = None
        self._last_renewal: float | None = None
        self._fd: int | None = None
        self._epoch: int | None = None

    @property
    def config(self) -> LeaseConfig:
        return self._config

    @property
    def host_id(self) -> int | None:
        return self._host_id

    def now(self) -> float:
        # sanlock stamps delta leases with CLOCK_MONOTONIC seconds, which is
        # time.monotonic() on Linux: the two can be compared directly.
        return time.monotonic()

    async def _raw(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _run(self, operation: str, fn: Callable[[], T]) -> T:
        try:
            return await self._raw(fn)
        except SanlockError as e:
            raise translate(e, operation=operation) from None

    def _joined(self) -> int:
        if self._host_id is None:
            raise FailedPrecondition("this host has not joined the lockspace", reason="LOCKSPACE_NOT_JOINED")
        return self._host_id

    # -- storage -----------------------------------------------------------

    async def init_storage(self, *, overwrite: bool = False) -> None:
        cfg = self._config
        if not overwrite and await self._lockspace_exists():
            raise AlreadyExists(
                f"a lockspace already exists in {cfg.ids_path}; overwriting it breaks every host using it",
                reason="LEASE_STORAGE_EXISTS",
                field="shared_dir",
            )
        await trio.to_thread.run_sync(self._create_files)
        await self._run(
            "init_storage",
            partial(
                self._api.write_lockspace,
                lockspace=cfg.lockspace,
                path=str(cfg.ids_path),
                max_hosts=cfg.max_hosts,
                io_timeout=cfg.io_timeout,
            ),
        )
        await self._run(
            "init_storage",
            partial(
                self._api.write_resource,
                lockspace=cfg.lockspace,
                resource=LEADER,
                path=str(cfg.leader_path),
                max_hosts=cfg.max_hosts,
            ),
        )

    async def _lockspace_exists(self) -> bool:
        if not self._config.ids_path.exists():
            return False
        try:
            await self._raw(partial(self._api.read_lockspace, path=str(self._config.ids_path)))
        except SanlockError:
            return False
        return True

    def _create_files(self) -> None:
        cfg = self._config
        cfg.lease_dir.mkdir(parents=True, exist_ok=True)
        try:
            # sanlock.service runs as user sanlock (group sanlock): give it the files.
            gid = grp.getgrnam("sanlock").gr_gid
        except KeyError:
            gid = -1
        for path in (cfg.ids_path, cfg.leader_path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
            try:
                # sanlock does direct I/O on whole aligned areas: one 1 MiB area each.
                if os.fstat(fd).st_size < ALIGN:
                    os.ftruncate(fd, ALIGN)
                if gid != -1:
                    os.fchown(fd, -1, gid)
                os.fchmod(fd, 0o660)
            finally:
                os.close(fd)

    # -- membership --------------------------------------------------------

    async def join(self, host_id: int) -> None:
        cfg = self._config
        if not 1 <= host_id <= cfg.max_hosts:
            raise InvalidArgument(
                f"host id must be 1..{cfg.max_hosts}", reason="INVALID_HOST_ID", field="host_id"
            )
        if self._host_id is not None:
            if self._host_id == host_id:
                return
            raise FailedPrecondition(
                f"already joined as host {self._host_id}", reason="ALREADY_JOINED", field="host_id"
            )
        started = self.now()
        try:
            await self._raw(
                partial(
                    self._api.add_lockspace,
                    lockspace=cfg.lockspace,
                    host_id=host_id,
                    path=str(cfg.ids_path),
                    io_timeout=cfg.io_timeout,
                )
            )
            # The delta lease was written during the call, so after `started`.
            last_renewal: float | None = started
        except SanlockError as e:
            if e.code != errno.EEXIST:
                raise translate(e, operation="join") from None
            await self._adopt(host_id)
            last_renewal = None  # learnt from the daemon below
        self._host_id = host_id
        self._generation = None
        self._last_renewal = last_renewal
        await self._observe()

    async def _adopt(self, host_id: int) -> None:
        """The daemon already has the lockspace (a restarted process): check it is ours."""
        cfg = self._config
        held = await self._run(
            "join",
            partial(
                self._api.inq_lockspace,
                lockspace=cfg.lockspace,
                host_id=host_id,
                path=str(cfg.ids_path),
                wait=True,
            ),
        )
        if not held:
            raise FailedPrecondition(
                f"this host's lease daemon is in lockspace {cfg.lockspace} as another host id (or leaving)",
                reason="LOCKSPACE_JOINED_AS_OTHER_HOST",
                field="host_id",
            )

    async def leave(self) -> None:
        if self._host_id is None:
            return
        cfg = self._config
        await self.release_leader()
        try:
            await self._raw(
                partial(
                    self._api.rem_lockspace,
                    lockspace=cfg.lockspace,
                    host_id=self._host_id,
                    path=str(cfg.ids_path),
                )
            )
        except SanlockError as e:
            if e.code != errno.ENOENT:
                raise translate(e, operation="leave") from None
        self._host_id = None
        self._generation = None
        self._last_renewal = None

    async def host_states(self) -> Mapping[int, HostState]:
        self._joined()
        records = await self._run(
            "host_states", partial(self._api.get_hosts, lockspace=self._config.lockspace)
        )
        return {
            r.host_id: HostState(
                host_id=r.host_id, status=r.status, generation=r.generation, renewal_timestamp=r.timestamp
            )
            for r in records
        }

    # -- renewal health ----------------------------------------------------

    async def _observe(self) -> str:
        """Learns the newest renewal of our own delta lease; returns a failure reason or ""."""
        host_id = self._joined()
        try:
            records = await self._run(
                "renewal", partial(self._api.get_hosts, lockspace=self._config.lockspace, host_id=host_id)
            )
        except ZsdError as e:
            return e.reason
        own = next((r for r in records if r.host_id == host_id), None)
        if own is None or own.timestamp == 0:
            return "LOCKSPACE_NOT_JOINED"
        if self._generation is None:
            self._generation = own.generation
        elif own.generation != self._generation:
            # A new instance of our host id: whatever we held under the old one is gone.
            return "HOST_LEASE_REPLACED"
        # The timestamp is the one read back from storage at sanlock's latest renewal
        # (so at least one renewal old): it certainly reached storage.
        if self._last_renewal is None or own.timestamp > self._last_renewal:
            self._last_renewal = float(own.timestamp)
        return ""

    async def renewal(self) -> Renewal:
        failure = await self._observe()
        return renewal_status(self._timing, now=self.now(), last_renewal=self._last_renewal, failure=failure)

    # -- leader lease ------------------------------------------------------

    async def leader(self) -> LeaderRecord:
        cfg = self._config
        path = str(cfg.leader_path)
        epoch = await self._run("leader", partial(self._api.read_resource_version, path=path))
        owners = await self._run(
            "leader",
            partial(self._api.read_resource_owners, lockspace=cfg.lockspace, resource=LEADER, path=path),
        )
        return LeaderRecord(owner=owners[0].host_id if owners else None, epoch=epoch)

    async def acquire_leader(self) -> int | None:
        host_id = self._joined()
        cfg = self._config
        async with self._leader_lock:
            if self._epoch is not None and self._fd is not None:
                held = await self._run(
                    "acquire_leader",
                    partial(self._api.held_version, lockspace=cfg.lockspace, resource=LEADER, fd=self._fd),
                )
                if held is not None:
                    return self._epoch
                self._epoch = None  # sanlock dropped it (lockspace lost)
            if not await self._leader_may_be_free(host_id):
                return None
            if self._fd is None:
                self._fd = await self._run("acquire_leader", self._api.register)
            fd = self._fd
            try:
                await self._raw(
                    partial(
                        self._api.acquire,
                        lockspace=cfg.lockspace,
                        resource=LEADER,
                        path=str(cfg.leader_path),
                        fd=fd,
                    )
                )
            except SanlockError as e:
                # EEXIST: another process of this host holds it.
                if held_elsewhere(e) or e.code == errno.EEXIST:
                    return None
                raise translate(e, operation="acquire_leader") from None
            epoch = await self._run(
                "acquire_leader",
                partial(self._api.held_version, lockspace=cfg.lockspace, resource=LEADER, fd=fd),
            )
            if epoch is None:
                raise Internal(
                    "the leader lease was acquired but is not held", reason="LEADER_LEASE_VANISHED"
                )
            self._epoch = epoch
            return epoch

    async def _leader_may_be_free(self, host_id: int) -> bool:
        """Whether an acquire can succeed without waiting.

        sanlock's acquire of a lease whose owner is failing (not yet dead) waits
        until the owner is dead, up to host_dead; we answer "not now" instead and
        let the caller retry, so acquire_leader stays a quick try.
        """
        cfg = self._config
        owners = await self._run(
            "acquire_leader",
            partial(
                self._api.read_resource_owners,
                lockspace=cfg.lockspace,
                resource=LEADER,
                path=str(cfg.leader_path),
            ),
        )
        for owner in owners:
            if owner.host_id == host_id:
                continue  # ours (maybe another process here): let sanlock answer
            try:
                states = await self._raw(
                    partial(self._api.get_hosts, lockspace=cfg.lockspace, host_id=owner.host_id)
                )
            except SanlockError as e:
                if e.code == errno.EAGAIN:
                    return False  # just joined: no view of the owner yet
                raise translate(e, operation="acquire_leader") from None
            state = next((s for s in states if s.host_id == owner.host_id), None)
            if state is None:
                return False
            if state.generation != owner.generation:
                return True  # the owner's host id was re-joined since: the lease is stale
            if state.status not in (HostStatus.DEAD, HostStatus.FREE):
                return False
        return True

    async def release_leader(self) -> None:
        cfg = self._config
        async with self._leader_lock:
            if self._epoch is None or self._fd is None:
                return
            try:
                await self._raw(
                    partial(
                        self._api.release,
                        lockspace=cfg.lockspace,
                        resource=LEADER,
                        path=str(cfg.leader_path),
                        fd=self._fd,
                    )
                )
            except SanlockError as e:
                # EPERM / ENOENT: not held any more (sanlock already dropped it).
                if e.code not in (errno.EPERM, errno.ENOENT):
                    raise translate(e, operation="release_leader") from None
            self._epoch = None

    async def aclose(self) -> None:
        async with self._leader_lock:
            fd, self._fd, self._epoch = self._fd, None, None
            if fd is None:
                return
            with contextlib.suppress(SanlockError, OSError):  # the connection is gone either way
                await self._raw(partial(self._api.unregister, fd=fd))
