"""StoreService: the leader's ClusterDb for trio, and the live change feed.

Every blocking database call runs in one worker thread at a time (a
CapacityLimiter of 1 around the single connection). Calls are not abandoned on
cancellation: a cancelled caller waits for its statement to finish, so no
transaction is ever left half-run in a thread nobody waits for.

Committed change sets are kept in a bounded in-memory ring; :meth:`StoreService.watch`
serves followers from it and falls back to the change log in the database for
anything older, so a slow watcher never holds back the leader and never misses a
revision (it gets Compacted once the log no longer reaches back that far).
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TypeVar

import trio

from zsd.cluster.store.db import ClusterDb
from zsd.cluster.store.errors import ResyncRequired
from zsd.cluster.store.model import (
    ChangeSet,
    CommitResult,
    EpochRecord,
    Mutation,
    Record,
    ResponseBuilder,
    Snapshot,
)
from zsd.errors import Internal, InvalidArgument, Unavailable, ZsdError

_T = TypeVar("_T")


class StoreService:
    """Owns ``db`` (closes it in :meth:`aclose`). Use from the trio thread."""

    def __init__(self, db: ClusterDb, *, recent: int = 1024) -> None:
        self._db = db
        self._limiter = trio.CapacityLimiter(1)
        # Held from a commit's start until it is published, so watchers see
        # revisions in order even when several tasks commit at once.
        self._commit_lock = trio.Lock()
        self._recent: deque[ChangeSet] = deque(maxlen=recent)
        self._head = db.revision
        self._changed = trio.Event()
        self._failure: ZsdError | None = None

    @property
    def epoch(self) -> int:
        return self._db.epoch

    @property
    def revision(self) -> int:
        """The newest revision committed (or found at open)."""
        return self._head

    async def commit(
        self,
        mutations: Sequence[Mutation],
        *,
        request_id: str | None = None,
        fingerprint: bytes = b"",
        response: bytes | ResponseBuilder = b"",
    ) -> CommitResult:
        """:meth:`ClusterDb.commit <zsd.cluster.store.db.ClusterDb.commit>`, then
        the change set is published to watchers."""
        call = functools.partial(
            self._db.commit,
            tuple(mutations),
            request_id=request_id,
            fingerprint=fingerprint,
            response=response,
        )
        async with self._commit_lock:
            result = await self._call(call)
            if result.changes is not None:
                self._publish(result.changes)
        return result

    async def replay(self, request_id: str, *, fingerprint: bytes) -> CommitResult | None:
        """:meth:`ClusterDb.replay <zsd.cluster.store.db.ClusterDb.replay>`."""
        return await self._call(functools.partial(self._db.replay, request_id, fingerprint=fingerprint))

    async def compact(self, *, keep: int) -> int:
        return await self._call(functools.partial(self._db.compact, keep=keep))

    async def get(self, kind: str, name: str) -> Record | None:
        return await self._call(functools.partial(self._db.get, kind, name))

    async def list(self, kind: str) -> tuple[Record, ...]:
        return await self._call(functools.partial(self._db.list, kind))

    async def snapshot(self) -> Snapshot:
        return await self._call(self._db.snapshot)

    async def changes_since(self, revision: int, *, limit: int = 1000) -> tuple[ChangeSet, ...]:
        return await self._call(functools.partial(self._db.changes_since, revision, limit=limit))

    async def epochs(self) -> tuple[EpochRecord, ...]:
        return await self._call(self._db.epochs)

    async def watch(self, from_revision: int, *, batch: int = 256) -> AsyncGenerator[ChangeSet, None]:
        """Every change set after ``from_revision``, in order, then live ones as they
        commit; never ends on its own.

        Raises Compacted (a ResyncRequired) when neither the ring of recent commits
        nor the log reaches back to ``from_revision`` (also later, if this watcher
        falls that far behind),
        ResyncRequired (REVISION_AHEAD) for a revision newer than the store, and the
        service's failure (Fenced, or Unavailable STORE_CLOSED) once it stops.
        Close it with ``contextlib.aclosing``.
        """
        if batch < 1:
            raise InvalidArgument("batch must be >= 1", field="batch")
        position = from_revision
        while True:
            self._check_open()
            if position > self._head:
                raise ResyncRequired(
                    f"revision {position} is ahead of the store's {self._head}",
                    reason="REVISION_AHEAD",
                    field="revision",
                )
            if position == self._head:
                changed = self._changed
                await changed.wait()
                continue
            sets = self._recent_after(position, batch) or await self.changes_since(position, limit=batch)
            if not sets:
                # Only if the file lost revisions this service committed; never spin on it.
                raise Internal(f"the store has nothing after {position}, below its head {self._head}")
            for changeset in sets:
                yield changeset
                position = changeset.revision

    async def aclose(self) -> None:
        """Stops the watchers and closes the database (after any call in flight)."""
        self._stop(Unavailable("the store service is closed", reason="STORE_CLOSED"))
        await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    # -- internals --------------------------------------------------------------

    async def _call(self, fn: Callable[[], _T]) -> _T:
        self._check_open()
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except ZsdError as e:
            if self._db.closed:
                # Fenced or a storage failure: this handle is finished, and so is
                # every watch served from it; followers reconnect to the leader.
                self._stop(e)
            raise

    def _publish(self, changeset: ChangeSet) -> None:
        if changeset.revision != self._head + 1:
            # Cannot happen while this service is the only writer; if it does, the
            # ring would have a hole, so let watchers read the log instead.
            self._recent.clear()
        self._recent.append(changeset)
        self._head = changeset.revision
        self._notify()

    def _recent_after(self, position: int, batch: int) -> tuple[ChangeSet, ...]:
        if not self._recent or not self._recent[0].revision <= position + 1 <= self._recent[-1].revision:
            return ()
        start = position + 1 - self._recent[0].revision
        return tuple(itertools.islice(self._recent, start, start + batch))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _stop(self, failure: ZsdError) -> None:
        if self._failure is None:
            self._failure = failure
        self._notify()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
