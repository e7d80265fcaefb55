"""StateCache: a host's in-memory copy of the desired state, fed by the leader's feed.

It holds exactly one revision of the store at a time: a snapshot, then whole
change sets in revision order. A change set that does not directly follow raises
RevisionGap and changes nothing, so the caller resyncs from a snapshot instead of
serving a state the store never had. Reads answer at :attr:`StateCache.revision`.

Used from the trio thread only (trio is needed just for :meth:`StateCache.wait_for`).
"""

from __future__ import annotations

import heapq

import trio

from zsd.cluster.store.errors import RevisionGap
from zsd.cluster.store.model import ChangeSet, Op, Record, Snapshot


class StateCache:
    def __init__(self) -> None:
        # Revision 0 with no resources is the state of a new store, so a fresh
        # cache can follow the feed from the start without a snapshot.
        self._revision = 0
        self._kinds: dict[str, dict[str, Record]] = {}
        self._waiters: dict[int, trio.Event] = {}
        self._waiting: list[int] = []  # heap of the revisions in _waiters

    @property
    def revision(self) -> int:
        return self._revision

    def reset(self, snapshot: Snapshot) -> None:
        """Replaces everything with ``snapshot`` (a full resync)."""
        kinds: dict[str, dict[str, Record]] = {}
        for record in snapshot.records:
            kinds.setdefault(record.kind, {})[record.name] = record
        self._kinds = kinds
        self._revision = snapshot.revision
        self._wake()

    def apply(self, changeset: ChangeSet) -> bool:
        """Applies the next revision; False (and nothing done) for one already held,
        which a resumed feed may repeat. RevisionGap when revisions are missing."""
        if changeset.revision <= self._revision:
            return False
        if changeset.revision != self._revision + 1:
            raise RevisionGap(
                f"cache is at revision {self._revision}, got {changeset.revision}",
                expected=self._revision + 1,
                got=changeset.revision,
            )
        for change in changeset.changes:
            if change.op is Op.PUT:
                self._kinds.setdefault(change.kind, {})[change.name] = change.record()
            else:
                names = self._kinds.get(change.kind, {})
                names.pop(change.name, None)
                if not names:
                    self._kinds.pop(change.kind, None)
        self._revision = changeset.revision
        self._wake()
        return True

    def get(self, kind: str, name: str) -> Record | None:
        return self._kinds.get(kind, {}).get(name)

    def list(self, kind: str) -> tuple[Record, ...]:
        """Every resource of ``kind``, ordered by name."""
        names = self._kinds.get(kind, {})
        return tuple(names[name] for name in sorted(names))

    def count(self, kind: str) -> int:
        return len(self._kinds.get(kind, {}))

    async def wait_for(self, revision: int) -> None:
        """Returns once the cache holds ``revision`` or a later one: after a forwarded
        mutation committed as ``revision``, the caller then reads its own write.
        Bound it with a trio timeout; it waits as long as the feed is behind."""
        if self._revision >= revision:
            await trio.lowlevel.checkpoint()
            return
        event = self._waiters.get(revision)
        if event is None:
            event = self._waiters[revision] = trio.Event()
            heapq.heappush(self._waiting, revision)
        await event.wait()

    def _wake(self) -> None:
        while self._waiting and self._waiting[0] <= self._revision:
            self._waiters.pop(heapq.heappop(self._waiting)).set()
