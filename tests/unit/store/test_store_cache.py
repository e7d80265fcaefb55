"""StateCache: whole revisions in order, gap detection, waiting for a revision."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from zsd.cluster.store import (
    Change,
    ChangeSet,
    ClusterDb,
    Create,
    Delete,
    Mutation,
    Op,
    Put,
    Record,
    RevisionGap,
    Snapshot,
    StateCache,
    Update,
)


def _put(revision: int, name: str, data: bytes = b"", kind: str = "vm") -> Change:
    return Change(
        revision=revision,
        epoch=1,
        op=Op.PUT,
        kind=kind,
        name=name,
        data=data,
        create_revision=revision,
        update_time=0.0,
    )


def _delete(revision: int, name: str) -> Change:
    return Change(
        revision=revision,
        epoch=1,
        op=Op.DELETE,
        kind="vm",
        name=name,
        data=None,
        create_revision=1,
        update_time=0.0,
    )


def _set(revision: int, *changes: Change) -> ChangeSet:
    return ChangeSet(revision=revision, epoch=1, changes=changes)


def test_applies_revisions_in_order() -> None:
    cache = StateCache()
    assert cache.apply(_set(1, _put(1, "b"), _put(1, "a"), _put(1, "n", kind="net")))
    assert cache.apply(_set(2, _delete(2, "b")))
    assert cache.revision == 2
    assert [r.name for r in cache.list("vm")] == ["a"]
    assert cache.count("net") == 1
    assert cache.get("vm", "b") is None
    record = cache.get("vm", "a")
    assert isinstance(record, Record) and record.revision == 1


def test_a_gap_is_refused_and_changes_nothing() -> None:
    cache = StateCache()
    cache.apply(_set(1, _put(1, "a")))
    with pytest.raises(RevisionGap) as e:
        cache.apply(_set(3, _put(3, "c")))
    assert (e.value.reason, e.value.expected, e.value.got) == ("REVISION_GAP", 2, 3)
    assert cache.revision == 1
    assert cache.get("vm", "c") is None


def test_a_revision_already_held_is_ignored() -> None:
    cache = StateCache()
    cache.apply(_set(1, _put(1, "a", b"1")))
    assert not cache.apply(_set(1, _put(1, "a", b"other")))
    record = cache.get("vm", "a")
    assert record is not None and record.data == b"1"


def test_reset_replaces_everything() -> None:
    cache = StateCache()
    cache.apply(_set(1, _put(1, "a")))
    snapshot_record = _put(7, "z").record()
    cache.reset(Snapshot(revision=7, records=(snapshot_record,)))
    assert cache.revision == 7
    assert cache.list("vm") == (snapshot_record,)
    cache.apply(_set(8, _put(8, "y")))
    assert [r.name for r in cache.list("vm")] == ["y", "z"]


async def test_wait_for_returns_once_the_revision_is_applied() -> None:
    cache = StateCache()
    woke: list[int] = []

    async def waiter(revision: int) -> None:
        await cache.wait_for(revision)
        woke.append(revision)

    async with trio.open_nursery() as nursery:
        for revision in (3, 2, 3):
            nursery.start_soon(waiter, revision)
        await trio.testing.wait_all_tasks_blocked()
        cache.apply(_set(1, _put(1, "a")))
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        cache.apply(_set(2, _put(2, "b")))
        await trio.testing.wait_all_tasks_blocked()
        assert woke == [2]
        cache.reset(Snapshot(revision=5, records=()))
    assert sorted(woke) == [2, 3, 3]
    with trio.fail_after(1):
        await cache.wait_for(4)


async def test_wait_for_can_be_bounded() -> None:
    cache = StateCache()
    with trio.move_on_after(0.01) as scope:
        await cache.wait_for(1)
    assert scope.cancelled_caught
    cache.apply(_set(1, _put(1, "a")))
    await cache.wait_for(1)


def test_a_cache_fed_by_the_log_matches_the_store(db: ClusterDb) -> None:
    rng = random.Random(7)
    cache = StateCache()
    names = [f"r{i}" for i in range(20)]
    for _ in range(200):
        present = {r.name for r in db.list("vm")}
        name = rng.choice(names)
        if name in present:
            choices: list[Mutation] = [
                Update(kind="vm", name=name, data=rng.randbytes(4)),
                Delete(kind="vm", name=name),
            ]
            op = rng.choice(choices)
            db.commit([op])
        else:
            db.commit(
                [Create(kind="vm", name=name, data=rng.randbytes(4)), Put(kind="log", name=name, data=b"")]
            )
        if rng.random() < 0.3:
            for changes in db.changes_since(cache.revision, limit=3):
                cache.apply(changes)
    for changes in db.changes_since(cache.revision):
        cache.apply(changes)
    snap = db.snapshot()
    assert cache.revision == snap.revision
    assert cache.list("log") + cache.list("vm") == snap.records
