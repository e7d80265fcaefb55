"""StoreService: the store for trio, and the watch feed (replay, then live)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
import trio.testing

from zsd.cluster.store import (
    ChangeSet,
    ClusterDb,
    Compacted,
    Create,
    Fenced,
    Put,
    ResyncRequired,
    StateCache,
    StoreService,
)
from zsd.errors import Unavailable


@pytest.fixture
async def service(path: Path) -> AsyncIterator[StoreService]:
    service = StoreService(ClusterDb.create(path, epoch=1, owner="h1"), recent=4)
    yield service
    await service.aclose()


async def _take(feed: AsyncIterator[ChangeSet], count: int) -> list[int]:
    revisions = []
    with trio.fail_after(5):
        async for changes in feed:
            revisions.append(changes.revision)
            if len(revisions) == count:
                break
    return revisions


async def _put(service: StoreService, name: str) -> int:
    return (await service.commit([Put(kind="vm", name=name, data=name.encode())])).revision


async def test_commit_and_reads_go_through_the_worker_thread(service: StoreService) -> None:
    result = await service.commit([Create(kind="vm", name="a", data=b"1")], request_id="r", response=b"ok")
    assert (result.revision, result.response) == (1, b"ok")
    assert (await service.commit([], request_id="r")).replayed
    record = await service.get("vm", "a")
    assert record is not None and record.data == b"1"
    assert [r.name for r in await service.list("vm")] == ["a"]
    assert (await service.snapshot()).revision == 1
    assert service.revision == 1 and service.epoch == 1
    assert [e.owner for e in await service.epochs()] == ["h1"]


async def test_watch_replays_the_log_then_follows_live_commits(service: StoreService) -> None:
    for i in range(3):
        await _put(service, f"v{i}")
    async with aclosing(service.watch(1, batch=1)) as feed:
        assert await _take(feed, 2) == [2, 3]
        async with trio.open_nursery() as nursery:
            for i in range(3, 8):
                nursery.start_soon(_put, service, f"v{i}")
        assert await _take(feed, 5) == [4, 5, 6, 7, 8]


async def test_a_watcher_waits_for_the_next_commit(service: StoreService) -> None:
    got: list[int] = []

    async def follow() -> None:
        async with aclosing(service.watch(0)) as feed:
            got.extend(await _take(feed, 2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        await _put(service, "a")
        await _put(service, "b")
    assert got == [1, 2]


async def test_a_watcher_behind_the_recent_ring_reads_the_log(service: StoreService) -> None:
    for i in range(10):
        await _put(service, f"v{i}")
    async with aclosing(service.watch(2, batch=3)) as feed:
        assert await _take(feed, 8) == list(range(3, 11))


async def test_watch_from_a_compacted_revision_raises(service: StoreService) -> None:
    for i in range(10):
        await _put(service, f"v{i}")
    await service.compact(keep=5)
    # Still in the ring of recent commits (4 here): served although compacted.
    async with aclosing(service.watch(6)) as feed:
        assert await _take(feed, 4) == [7, 8, 9, 10]
    with pytest.raises(Compacted):
        async with aclosing(service.watch(4)) as feed:
            await _take(feed, 1)
    with pytest.raises(ResyncRequired):
        async with aclosing(service.watch(11)) as feed:
            await _take(feed, 1)


async def test_a_slow_watcher_past_compaction_gets_compacted(service: StoreService) -> None:
    await _put(service, "first")
    async with aclosing(service.watch(0)) as feed:
        assert await _take(feed, 1) == [1]
        for i in range(10):
            await _put(service, f"v{i}")
        await service.compact(keep=1)
        with pytest.raises(Compacted):
            await _take(feed, 1)


async def test_watchers_stop_when_the_service_is_fenced(path: Path) -> None:
    service = StoreService(ClusterDb.create(path, epoch=1, owner="h1"))
    errors: list[Exception] = []

    async def follow() -> None:
        try:
            async with aclosing(service.watch(0)) as feed:
                await _take(feed, 10)
        except Fenced as e:
            errors.append(e)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            ClusterDb.open(path, epoch=2, owner="h2").close()
            with pytest.raises(Fenced):
                await _put(service, "late")
        assert len(errors) == 1
        with pytest.raises(Fenced):
            await service.get("vm", "late")
    finally:
        await service.aclose()


async def test_aclose_stops_watchers(path: Path) -> None:
    service = StoreService(ClusterDb.create(path, epoch=1, owner="h1"))
    errors: list[Unavailable] = []

    async def follow() -> None:
        try:
            async with aclosing(service.watch(0)) as feed:
                await _take(feed, 1)
        except Unavailable as e:
            errors.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        await service.aclose()
    assert [e.reason for e in errors] == ["STORE_CLOSED"]
    with pytest.raises(Unavailable):
        await service.get("vm", "a")


async def test_a_cache_fed_by_watch_reads_its_own_writes(service: StoreService) -> None:
    cache = StateCache()

    async def feed_cache() -> None:
        async with aclosing(service.watch(cache.revision)) as feed:
            async for changes in feed:
                cache.apply(changes)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed_cache)
        for i in range(20):
            revision = await _put(service, f"v{i}")
            with trio.fail_after(5):
                await cache.wait_for(revision)
            record = cache.get("vm", f"v{i}")
            assert record is not None and record.revision == revision
        nursery.cancel_scope.cancel()
    assert cache.count("vm") == 20
