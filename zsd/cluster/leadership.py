"""Leadership: campaign for the leader lease, hold cluster.db open while leading,
and step down before the lease could pass to another host.

The leader is whoever holds the lease authority's ``leader`` lease; its epoch
stamps every write. While leading, a ``RenewalMonitor`` watches our own host
lease: when it turns unhealthy, or when ``valid_until`` (the earliest moment
another host could take the lease) comes within ``commit_margin``, writing stops
first (the store's guard refuses every later COMMIT), then the store is closed,
and only then is the lease released. A deposed leader that still has the file
open is also refused by the store's epoch check: the second line of defence.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from zsd.cluster.lease.authority import Authority
from zsd.cluster.lease.monitor import RenewalMonitor
from zsd.cluster.store import ClusterDb, StoreService
from zsd.errors import Unavailable, ZsdError

log = logging.getLogger(__name__)

OpenDb = Callable[..., ClusterDb]


@dataclass(frozen=True, kw_only=True)
class LeadershipState:
    """What this host knows about leadership, published on every change."""

    leading: bool
    # The leader's host id (ours when leading); None when nobody holds the lease.
    leader_host_id: int | None
    # Our epoch when leading, else the newest epoch seen on shared storage.
    epoch: int
    # When this state began (authority clock).
    since: float
    # The same moment on the wall clock, for people and the API.
    since_wall: float = 0.0
    # Open only while leading; every write goes through it.
    store: StoreService | None = None


class Leadership:
    def __init__(
        self,
        *,
        authority: Authority,
        db_path: Path,
        owner: str,
        open_db: OpenDb = ClusterDb.open,
        retry_interval: float = 1.0,
        commit_margin: float = 1.0,
        monitor_interval: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock
        self._authority = authority
        self._db_path = db_path
        self._owner = owner
        self._open_db = open_db
        self._retry = retry_interval
        self._margin = commit_margin
        self._monitor_interval = monitor_interval
        self._state = LeadershipState(leading=False, leader_host_id=None, epoch=0, since=authority.now())
        self._changed = trio.Event()
        # Read by the store's guard on its worker thread: a plain bool, flipped by trio.
        self._may_write = False
        self.terms = 0

    @property
    def state(self) -> LeadershipState:
        return self._state

    async def wait_changed(self) -> LeadershipState:
        await self._changed.wait()
        return self._state

    def _publish(self, state: LeadershipState) -> None:
        if replace(state, since_wall=0.0) != replace(self._state, since_wall=0.0):
            self._state = replace(
                state, since_wall=self._wall_clock() - (self._authority.now() - state.since)
            )
            self._changed.set()
            self._changed = trio.Event()

    def _guard(self) -> None:
        if not self._may_write:
            raise Unavailable(
                "this host is no longer leader (its lease may lapse); retry: the request is forwarded "
                "to the new leader",
                reason="NOT_LEADER",
            )

    async def run(self, *, task_status: trio.TaskStatus[LeadershipState] = trio.TASK_STATUS_IGNORED) -> None:
        """Campaigns until cancelled; ``started`` after the first attempt (leading or not)."""
        started = False
        while True:
            epoch: int | None = None
            try:
                # A host whose own lease is failing must not lead, even if the lease
                # daemon would still hand it the leader lease it never released.
                if (await self._authority.renewal()).healthy:
                    epoch = await self._authority.acquire_leader()
                if epoch is None:
                    record = await self._authority.leader()
                    self._publish(
                        LeadershipState(
                            leading=False,
                            leader_host_id=record.owner,
                            epoch=record.epoch,
                            since=self._state.since
                            if self._state.leader_host_id == record.owner
                            else self._authority.now(),
                        )
                    )
            except ZsdError as e:
                log.warning("leader campaign failed, retrying in %.1f s: %s", self._retry, e)
            if epoch is not None:
                await self._lead(epoch, task_status if not started else None)
                started = True
            elif not started:
                task_status.started(self._state)
                started = True
            await trio.sleep(self._retry)

    async def _lead(self, epoch: int, task_status: trio.TaskStatus[LeadershipState] | None) -> None:
        store: StoreService | None = None
        try:
            async with trio.open_nursery() as nursery:
                monitor = RenewalMonitor(self._authority, interval=self._monitor_interval)
                first = await nursery.start(monitor.run)
                if first.healthy:
                    self._may_write = True
                    db = await trio.to_thread.run_sync(
                        lambda: self._open_db(
                            self._db_path, epoch=epoch, owner=self._owner, guard=self._guard
                        )
                    )
                    store = StoreService(db)
                    self.terms += 1
                    log.info("leading with epoch %d", epoch)
                    self._publish(
                        LeadershipState(
                            leading=True,
                            leader_host_id=self._authority.host_id,
                            epoch=epoch,
                            since=self._authority.now(),
                            store=store,
                        )
                    )
                    if task_status is not None:
                        task_status.started(self._state)
                        task_status = None
                    await self._hold(monitor)
                nursery.cancel_scope.cancel()
        except* ZsdError as group:
            # The lease daemon or the storage failed under us: that is a reason to step
            # down, not to stop campaigning.
            log.warning("stepping down as leader of epoch %d: %s", epoch, group.exceptions[0])
        finally:
            with trio.CancelScope(shield=True):
                await self._step_down(epoch, store)
            if task_status is not None:
                task_status.started(self._state)

    async def _hold(self, monitor: RenewalMonitor) -> None:
        """Returns when it is time to stop writing."""
        while True:
            renewal = monitor.latest
            if renewal is None or not renewal.healthy:
                log.warning(
                    "own host lease unhealthy (%s): stepping down", renewal.reason if renewal else "none"
                )
                return
            remaining = renewal.valid_until - self._margin - self._authority.now()
            if remaining <= 0:
                log.warning("lease validity ran short without renewal: stepping down")
                return
            with trio.move_on_after(remaining if math.isfinite(remaining) else 3600):
                await monitor.wait_unhealthy()

    async def _step_down(self, epoch: int, store: StoreService | None) -> None:
        # Order matters: refuse writes, let an in-flight commit finish or fail, close,
        # and only then give up the lease another host may take.
        self._may_write = False
        if store is not None:
            await store.aclose()
        try:
            await self._authority.release_leader()
        except ZsdError as e:
            log.warning("releasing the leader lease of epoch %d failed (it will lapse): %s", epoch, e)
        self._publish(
            LeadershipState(leading=False, leader_host_id=None, epoch=epoch, since=self._authority.now())
        )
