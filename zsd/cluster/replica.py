"""Replica: this host's copy of the cluster state, kept current from the leader.

On the leader it follows its own StoreService; on a follower it follows the
leader's feed over the peer channel (PeerService.Watch), resuming from the
revision it holds, and starting from a snapshot when it holds nothing the leader
can continue (the leader decides, and a gap seen here forces one). When the
leader changes, the feed is reopened to the new leader from the same revision:
both served the one history in cluster.db.

Local consumers (ClusterService.Watch, the host's reaction to its own removal)
read whole revisions from a bounded ring of recent change sets through
:meth:`Replica.changes`. Everything here runs on the trio thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

import trio

from zsd.cluster.leadership import LeadershipState
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.store import ChangeSet, ResyncRequired, RevisionGap, Snapshot, StateCache
from zsd.errors import FailedPrecondition, PermissionDenied, Unavailable, ZsdError

log = logging.getLogger(__name__)

Resolver = Callable[[LeadershipState], Awaitable[PeerTarget | None]]
"""Where the leader named by a state listens; None while unknown."""
FeedOpener = Callable[[PeerTarget, int, bool], AsyncGenerator[Snapshot | ChangeSet, None]]
"""(leader, from_revision, want_snapshot) -> the leader's feed (see peerclient.watch_feed)."""


class LeadershipSource(Protocol):
    @property
    def state(self) -> LeadershipState: ...

    async def wait_changed(self) -> LeadershipState: ...


class Replica:
    def __init__(
        self,
        *,
        leadership: LeadershipSource,
        resolve: Resolver,
        open_feed: FeedOpener,
        cache: StateCache | None = None,
        retry_interval: float = 0.5,
        recent: int = 4096,
    ) -> None:
        self.cache = cache or StateCache()
        self._leadership = leadership
        self._resolve = resolve
        self._open_feed = open_feed
        self._retry = retry_interval
        self._recent: deque[ChangeSet] = deque(maxlen=recent)
        # Local watchers from before this revision cannot be served (a snapshot
        # replaced what they were following).
        self._floor = 0
        self._changed = trio.Event()
        self._want_snapshot = False
        self.synced = trio.Event()
        """Set once the copy has caught up with a leader for the first time."""
        self.refused_since: float | None = None
        """trio time since which the leader keeps refusing this host's certificate (it
        is no member there); None while the feed is served. A host whose feed broke
        just as it was removed learns of its removal this way, not from the copy."""

    @property
    def revision(self) -> int:
        return self.cache.revision

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            state = self._leadership.state
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_changed, nursery.cancel_scope)
                await self._follow_once(state)
                nursery.cancel_scope.cancel()

    async def _until_changed(self, scope: trio.CancelScope) -> None:
        await self._leadership.wait_changed()
        scope.cancel()

    async def _follow_once(self, state: LeadershipState) -> None:
        try:
            if state.leading and state.store is not None:
                await self._follow_store(state)
            elif state.leader_host_id is not None:
                await self._follow_leader(state)
            else:
                await trio.sleep_forever()  # nobody leads: wait for a change
        except ZsdError as e:
            refused = isinstance(e, PermissionDenied) and e.field == "certificate"
            if refused and self.refused_since is None:
                self.refused_since = trio.current_time()
            log.info("state feed interrupted (%s); retrying in %.1f s", e, self._retry)
            await trio.sleep(self._retry)

    async def _follow_store(self, state: LeadershipState) -> None:
        store = state.store
        assert store is not None
        try:
            feed = store.watch(self.cache.revision)
            async with contextlib.aclosing(feed):
                self._caught_up(store.revision)
                async for changeset in feed:
                    self._apply(changeset)
                    self._caught_up(store.revision)
        except ResyncRequired:
            self._reset(await store.snapshot())

    async def _follow_leader(self, state: LeadershipState) -> None:
        target = await self._resolve(state)
        if target is None:
            raise Unavailable(f"the address of leader host {state.leader_host_id} is not known yet")
        # Until the copy has caught up once it asks for a snapshot: a feed replayed
        # from revision 0 passes through every past state, and ``synced`` (which the
        # host's reconcilers wait for) must mean the whole state, not its first change.
        snapshot = self._want_snapshot or not self.synced.is_set()
        self._want_snapshot = False
        log.info("following the leader at %s from revision %d", target.endpoint, self.cache.revision)
        feed = self._open_feed(target, self.cache.revision, snapshot)
        async with contextlib.aclosing(feed):
            async for event in feed:
                self.refused_since = None
                if isinstance(event, Snapshot):
                    self._reset(event)
                    self.synced.set()
                else:
                    try:
                        self._apply(event)
                    except RevisionGap:
                        self._want_snapshot = True
                        raise

    def _caught_up(self, head: int) -> None:
        if self.cache.revision >= head and not self.synced.is_set():
            self.synced.set()

    def _apply(self, changeset: ChangeSet) -> None:
        if self.cache.apply(changeset):
            if self._recent and self._recent[-1].revision != changeset.revision - 1:
                self._recent.clear()
                self._floor = changeset.revision - 1
            self._recent.append(changeset)
            self._notify()

    def _reset(self, snapshot: Snapshot) -> None:
        log.info("state copy reset from a snapshot at revision %d", snapshot.revision)
        self.cache.reset(snapshot)
        self._recent.clear()
        self._floor = snapshot.revision
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Returns after the copy next changes."""
        await self._changed.wait()

    async def changes(self, from_revision: int) -> AsyncGenerator[ChangeSet, None]:
        """Whole change sets after ``from_revision``, then live ones; never ends on its
        own. FailedPrecondition REVISION_COMPACTED when this host no longer holds
        changes that old (list again, then watch from the list's revision)."""
        position = from_revision
        while True:
            if position >= self.cache.revision:
                # Ahead of this copy (a revision read from a faster host): wait for it.
                await self._changed.wait()
                continue
            oldest = self._recent[0].revision if self._recent else self.cache.revision + 1
            if position < self._floor or position + 1 < oldest:
                raise FailedPrecondition(
                    f"this host no longer holds the changes after revision {position}; list again and "
                    f"watch from the revision of the list (now {self.cache.revision})",
                    reason="REVISION_COMPACTED",
                    field="from_revision",
                )
            start = position + 1 - oldest
            for changeset in list(itertools.islice(self._recent, start, None)):
                yield changeset
                position = changeset.revision
