"""The change log: whole revisions in order, compaction, and the resync it forces."""

from __future__ import annotations

import pytest

from zsd.cluster.store import ClusterDb, Compacted, Create, Delete, Put, ResyncRequired, StateCache
from zsd.errors import FailedPrecondition, InvalidArgument


def _fill(db: ClusterDb, revisions: int) -> None:
    for i in range(revisions):
        db.commit([Put(kind="vm", name=f"v{i}", data=b""), Put(kind="net", name=f"n{i}", data=b"")])


def test_changes_come_in_whole_revisions_up_to_the_limit(db: ClusterDb) -> None:
    _fill(db, 5)
    page = db.changes_since(1, limit=2)
    assert [s.revision for s in page] == [2, 3]
    assert all(len(s.changes) == 2 and {c.revision for c in s.changes} == {s.revision} for s in page)
    assert [s.revision for s in db.changes_since(3, limit=100)] == [4, 5]
    assert db.changes_since(5) == ()
    with pytest.raises(InvalidArgument):
        db.changes_since(0, limit=0)


def test_a_revision_ahead_of_the_store_requires_a_resync(db: ClusterDb) -> None:
    _fill(db, 1)
    with pytest.raises(ResyncRequired) as e:
        db.changes_since(2)
    assert e.value.reason == "REVISION_AHEAD"


def test_compaction_keeps_the_newest_revisions(db: ClusterDb) -> None:
    _fill(db, 5)
    assert db.compact(keep=2) == 3
    assert db.compacted_revision() == 3
    assert [s.revision for s in db.changes_since(3)] == [4, 5]
    with pytest.raises(Compacted) as e:
        db.changes_since(2)
    assert isinstance(e.value, ResyncRequired) and isinstance(e.value, FailedPrecondition)
    assert (e.value.reason, e.value.revision, e.value.compacted_revision) == ("COMPACTED", 2, 3)
    # Never moves back, and survives a reopen.
    assert db.compact(keep=10) == 3
    db.close()
    with ClusterDb.open(db.path, epoch=2, owner="h2") as successor:
        assert successor.compacted_revision() == 3
        assert successor.compact(keep=0) == 5
        assert successor.changes_since(5) == ()


def test_a_follower_past_the_compaction_resyncs_from_a_snapshot(db: ClusterDb) -> None:
    cache = StateCache()
    db.commit([Create(kind="vm", name="gone", data=b"")])
    for changes in db.changes_since(cache.revision):
        cache.apply(changes)
    _fill(db, 3)
    db.commit([Delete(kind="vm", name="gone")])
    db.compact(keep=1)
    with pytest.raises(Compacted):
        db.changes_since(cache.revision)
    cache.reset(db.snapshot())
    _fill(db, 1)
    for changes in db.changes_since(cache.revision):
        cache.apply(changes)
    assert cache.revision == db.revision
    snap = db.snapshot()
    assert [r for kind in ("vm", "net") for r in cache.list(kind)] == [
        r for kind in ("vm", "net") for r in snap.records if r.kind == kind
    ]
    assert cache.get("vm", "gone") is None
