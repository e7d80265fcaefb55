"""ClusterControl: what the API needs from the control plane, on the trio thread.

Reads come from this host's state copy (the Replica); mutations run against the
leader's store and fail with UNAVAILABLE NOT_LEADER anywhere else (the API's
Router forwards them to the leader before they get here). A host that is not a
cluster member (the embedded cluster of one) has neither: its host list is just
itself, and it has nothing to mutate.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from zsd.cluster import hostctl
from zsd.cluster.clusterops import KIND_OPERATION, ClusterOp, ClusterOps
from zsd.cluster.lease.authority import HostStatus
from zsd.cluster.records import KIND_HOST, KIND_HOST_STATUS, HostEntry
from zsd.cluster.replica import LeadershipSource, Replica
from zsd.cluster.store import ChangeSet, Mutation, ResyncRequired, Snapshot, StoreService
from zsd.errors import NotFound, Unavailable, ZsdError

log = logging.getLogger(__name__)

GossipStates = Callable[[], Mapping[str, str]]
"""Host name -> gossip state ("alive", "suspect", "dead", "left") as this host sees it."""
LeaseStates = Callable[[], Mapping[int, HostStatus]]


@dataclass(frozen=True, kw_only=True)
class HostView:
    entry: HostEntry
    etag: int
    status: bytes | None
    """The host's last report of itself (an encoded zsd.v1.Host), if any."""
    gossip: str | None
    lease: HostStatus | None


class ClusterControl:
    def __init__(
        self,
        *,
        leadership: LeadershipSource,
        replica: Replica,
        gossip: GossipStates | None = None,
        leases: LeaseStates | None = None,
        host_name: str = "",
    ) -> None:
        self._leadership = leadership
        self.replica = replica
        self._gossip = gossip
        self._leases = leases
        # Serializes label read-modify-writes on the leader (see hostctl).
        self._host_lock = trio.Lock()
        self.ops = ClusterOps(jobs={"DeleteHost": _remove_host}, leader=host_name)

    # -- reads (this host's copy) ------------------------------------------------

    @property
    def revision(self) -> int:
        return self.replica.revision

    def host_views(self) -> tuple[HostView, ...]:
        cache = self.replica.cache
        gossip = self._gossip() if self._gossip is not None else {}
        leases = self._leases() if self._leases is not None else {}
        views = []
        for record in cache.list(KIND_HOST):
            entry = HostEntry.decode(record.data)
            status = cache.get(KIND_HOST_STATUS, entry.name)
            views.append(
                HostView(
                    entry=entry,
                    etag=record.revision,
                    status=status.data if status is not None else None,
                    gossip=gossip.get(entry.name),
                    lease=leases.get(entry.host_id),
                )
            )
        return tuple(views)

    def host_view(self, name: str) -> HostView:
        for view in self.host_views():
            if view.entry.name == name:
                return view
        raise NotFound(f"host 'hosts/{name}' is not a member of this cluster", field="name")

    async def wait_revision(self, revision: int, timeout: float) -> None:
        """Waits (up to ``timeout``) until this host's copy holds ``revision``."""
        with trio.move_on_after(timeout):
            await self.replica.cache.wait_for(revision)

    async def at_leader_revision(self) -> None:
        """For a consistent read on the leader: its copy holds everything committed."""
        await self.wait_revision(self.store().revision, 2.0)

    # -- the leader's store ------------------------------------------------------

    @property
    def leading(self) -> bool:
        state = self._leadership.state
        return state.leading and state.store is not None

    def store(self) -> StoreService:
        state = self._leadership.state
        if not state.leading or state.store is None:
            raise Unavailable("this host is not the leader", reason="NOT_LEADER")
        return state.store

    async def feed(self, from_revision: int, snapshot: bool) -> AsyncGenerator[Snapshot | ChangeSet, None]:
        """The leader's feed for a follower: a snapshot first when asked for or when
        the changes after ``from_revision`` are gone, then change sets."""
        store = self.store()
        position = from_revision
        if snapshot:
            snap = await store.snapshot()
            yield snap
            position = snap.revision
        while True:
            try:
                changes = store.watch(position)
                async with contextlib.aclosing(changes):
                    async for changeset in changes:
                        yield changeset
                        position = changeset.revision
            except ResyncRequired:
                snap = await store.snapshot()
                yield snap
                position = snap.revision

    # -- mutations (leader) ------------------------------------------------------

    async def update_labels(
        self,
        *,
        host: str,
        labels: Mapping[str, str],
        paths: list[str],
        etag: int | None,
        request_id: str | None,
    ) -> int:
        committed = await hostctl.update_labels(
            self.store(),
            host=host,
            labels=labels,
            paths=paths,
            etag=etag,
            request_id=request_id,
            lock=self._host_lock,
        )
        return committed.revision

    async def delete_host(self, *, host: str, force: bool, request_id: str) -> tuple[ClusterOp, int]:
        """Starts the removal of ``host`` as a cluster operation (checked first, so a
        refusal is the call's error rather than a failed operation)."""
        store = self.store()
        fp = hostctl.fingerprint("DeleteHost", host, force)
        replay = await store.replay(request_id, fingerprint=fp)
        if replay is None:
            await hostctl.check_removal(store, host=host, force=force)
        return await self.ops.start(
            verb="DeleteHost",
            target=f"hosts/{host}",
            request_id=request_id,
            params={"host": host, "force": force},
            fingerprint=fp,
        )

    def operation(self, uid: str) -> ClusterOp | None:
        record = self.replica.cache.get(KIND_OPERATION, uid)
        return ClusterOp.decode(record.data) if record is not None else None

    def operations(self) -> tuple[ClusterOp, ...]:
        return tuple(ClusterOp.decode(r.data) for r in self.replica.cache.list(KIND_OPERATION))

    async def run_terms(self) -> None:
        """Runs the cluster operations and the store's upkeep of each term this host leads."""
        while True:
            state = self._leadership.state
            if state.leading and state.store is not None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.ops.run_term, state.store)
                    nursery.start_soon(compact_periodically, state.store)
                    await self._leadership.wait_changed()
                    nursery.cancel_scope.cancel()
            else:
                await self._leadership.wait_changed()

    async def report_status(self, *, host: str, status: bytes) -> int:
        committed = await hostctl.report_status(self.store(), host=host, status=status)
        return committed.revision


async def _remove_host(store: StoreService, op: ClusterOp) -> Sequence[Mutation]:
    params = json.loads(op.params)
    # Draining VMs off the host comes with compute; with force they are left to HA.
    return await hostctl.removal(store, host=str(params["host"]), force=bool(params["force"]))


COMPACT_INTERVAL = 300.0
COMPACT_KEEP = 10_000
"""Revisions of change log kept: a follower further behind than this resyncs from a
snapshot (cheap at this size); request ids expire by age (StoreOptions)."""


async def compact_periodically(
    store: StoreService, *, interval: float = COMPACT_INTERVAL, keep: int = COMPACT_KEEP
) -> None:
    while True:
        await trio.sleep(interval)
        try:
            compacted = await store.compact(keep=keep)
        except ZsdError as e:
            log.warning("compacting cluster.db failed (will retry): %s", e)
            continue
        log.debug("cluster.db change log compacted up to revision %d", compacted)
