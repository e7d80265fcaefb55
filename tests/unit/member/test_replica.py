"""Replica: the state copy follows the leader's store when leading, the leader's feed
otherwise; resumes from its revision, resyncs after a gap, switches leaders."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from zsd.cluster import feedcodec
from zsd.cluster.leadership import LeadershipState
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.replica import Replica
from zsd.cluster.store import ChangeSet, ClusterDb, Put, Snapshot, StoreService
from zsd.errors import FailedPrecondition, PermissionDenied, Unavailable

LEADER_A = PeerTarget(endpoint="192.0.2.1:7443", host_name="a")
LEADER_B = PeerTarget(endpoint="192.0.2.2:7443", host_name="b")


class Leadership:
    """What Replica reads of Leadership: the state and its changes."""

    def __init__(self, state: LeadershipState) -> None:
        self.state = state
        self._changed = trio.Event()

    def set(self, state: LeadershipState) -> None:
        self.state = state
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> LeadershipState:
        await self._changed.wait()
        return self.state


def following(host_id: int) -> LeadershipState:
    return LeadershipState(leading=False, leader_host_id=host_id, epoch=1, since=0.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreService]:
    service = StoreService(ClusterDb.create(tmp_path / "cluster.db", epoch=1, owner="a"))
    yield service
    await service.aclose()


async def put(store: StoreService, name: str) -> int:
    return (await store.commit([Put(kind="k", name=name, data=name.encode())])).revision


class Feeds:
    """The leader's side of PeerService.Watch over a real store, through the wire
    encoding; records every open and can break the stream on demand."""

    def __init__(self, stores: dict[PeerTarget, StoreService]) -> None:
        self.stores = stores
        self.opens: list[tuple[str, int, bool]] = []
        self.inject: list[ChangeSet] = []
        self.breaks = 0

    async def open(
        self, target: PeerTarget, revision: int, snapshot: bool
    ) -> AsyncGenerator[Snapshot | ChangeSet, None]:
        self.opens.append((target.host_name, revision, snapshot))
        store = self.stores[target]
        breaks = self.breaks
        if snapshot:
            yield feedcodec.snapshot_from_pb(feedcodec.snapshot_to_pb(await store.snapshot()))
            revision = store.revision
        while self.inject:
            yield self.inject.pop(0)
        async with contextlib.aclosing(store.watch(revision)) as changes:
            async for cs in changes:
                if self.breaks != breaks:
                    raise Unavailable("stream broken")
                yield feedcodec.changeset_from_pb(feedcodec.changeset_to_pb(cs))


async def wait_revision(replica: Replica, revision: int) -> None:
    with trio.fail_after(5):
        await replica.cache.wait_for(revision)


async def test_leader_follows_its_own_store(store: StoreService) -> None:
    state = LeadershipState(leading=True, leader_host_id=1, epoch=1, since=0.0, store=store)
    replica = Replica(leadership=Leadership(state), resolve=_never, open_feed=_no_feed, retry_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        await put(store, "x")
        await wait_revision(replica, 1)
        assert replica.cache.get("k", "x") is not None and replica.synced.is_set()
        nursery.cancel_scope.cancel()


async def test_follower_resumes_from_its_revision_after_a_broken_stream(store: StoreService) -> None:
    feeds = Feeds({LEADER_A: store})
    leadership = Leadership(following(1))

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        return LEADER_A

    replica = Replica(leadership=leadership, resolve=resolve, open_feed=feeds.open, retry_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        await put(store, "a")
        await wait_revision(replica, 1)
        feeds.breaks += 1
        await put(store, "b")  # the stream breaks on this one
        await put(store, "c")
        await wait_revision(replica, 3)
        nursery.cancel_scope.cancel()
    assert next(o for o in feeds.opens if o[1] > 0) == ("a", 1, False)
    assert replica.cache.count("k") == 3


async def test_a_gap_makes_the_next_feed_start_with_a_snapshot(store: StoreService) -> None:
    feeds = Feeds({LEADER_A: store})
    await put(store, "a")
    await put(store, "b")
    # A change set from the future: the copy cannot apply it and must resync.
    feeds.inject.append(ChangeSet(revision=5, epoch=1, changes=()))

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        return LEADER_A

    replica = Replica(
        leadership=Leadership(following(1)), resolve=resolve, open_feed=feeds.open, retry_interval=0.01
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        with trio.fail_after(5):
            while len(feeds.opens) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # The first feed starts with a snapshot (nothing synced yet); after the gap the
    # next one asks for a snapshot again, from the revision the copy holds.
    assert feeds.opens[:2] == [("a", 0, True), ("a", 2, True)]
    assert replica.cache.count("k") == 2


async def test_synced_means_the_whole_state_not_its_first_change(store: StoreService) -> None:
    """A restarted member's reconcilers wait for ``synced``: it must not be set while
    the copy holds part of the leader's state (a replay from revision 0 would)."""
    for name in ("a", "b", "c"):
        await put(store, name)
    feeds = Feeds({LEADER_A: store})

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        return LEADER_A

    replica = Replica(leadership=Leadership(following(1)), resolve=resolve, open_feed=feeds.open)
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        with trio.fail_after(5):
            await replica.synced.wait()
        assert replica.cache.count("k") == 3 and replica.revision == 3
        nursery.cancel_scope.cancel()


async def test_a_new_leader_is_followed_from_the_same_revision(store: StoreService, tmp_path: Path) -> None:
    feeds = Feeds({LEADER_A: store, LEADER_B: store})  # one history, two leaders in turn
    leadership = Leadership(following(1))

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        return LEADER_A if state.leader_host_id == 1 else LEADER_B

    replica = Replica(leadership=leadership, resolve=resolve, open_feed=feeds.open, retry_interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        await put(store, "a")
        await wait_revision(replica, 1)
        leadership.set(replace(following(2), epoch=2))
        await put(store, "b")
        await wait_revision(replica, 2)
        nursery.cancel_scope.cancel()
    assert ("b", 1, False) in feeds.opens


async def test_local_watchers_get_whole_revisions_and_are_told_when_too_old(store: StoreService) -> None:
    state = LeadershipState(leading=True, leader_host_id=1, epoch=1, since=0.0, store=store)
    replica = Replica(leadership=Leadership(state), resolve=_never, open_feed=_no_feed, recent=2)
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)

        async def watch() -> None:
            async with contextlib.aclosing(replica.changes(0)) as changes:
                async for cs in changes:
                    got.append(cs.revision)
                    if len(got) == 3:
                        return

        nursery.start_soon(watch)
        for name in "abc":
            await put(store, name)
            await wait_revision(replica, store.revision)
            await trio.sleep(0.01)
        with trio.fail_after(5):
            while len(got) < 3:
                await trio.sleep(0.01)
        with pytest.raises(FailedPrecondition) as e:
            async with contextlib.aclosing(replica.changes(0)) as old:  # revision 1 left the ring of 2
                async for _ in old:
                    break
        assert e.value.reason == "REVISION_COMPACTED"
        nursery.cancel_scope.cancel()
    assert got == [1, 2, 3]


async def _never(state: LeadershipState) -> PeerTarget | None:
    raise AssertionError("a leader never resolves another leader")


def _no_feed(target: PeerTarget, revision: int, snapshot: bool) -> AsyncGenerator[Snapshot | ChangeSet, None]:
    raise AssertionError("a leader never opens a remote feed")


async def test_a_refused_certificate_is_remembered_until_the_feed_serves_again(store: StoreService) -> None:
    # A host removed while its feed was down never sees its removal in the copy: the
    # leader's refusal is what tells it (member.py leaves after REFUSED_FOR).
    feeds = Feeds({LEADER_A: store})
    refuse = [True]

    async def open_feed(
        target: PeerTarget, revision: int, snapshot: bool
    ) -> AsyncGenerator[Snapshot | ChangeSet, None]:
        if refuse[0]:
            raise PermissionDenied("hosts/h3 is not a member of this cluster", field="certificate")
        async for event in feeds.open(target, revision, snapshot):
            yield event

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        return LEADER_A

    replica = Replica(
        leadership=Leadership(following(1)), resolve=resolve, open_feed=open_feed, retry_interval=0.01
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(replica.run)
        with trio.fail_after(5):
            while replica.refused_since is None:
                await trio.sleep(0.01)
        first = replica.refused_since
        await trio.sleep(0.05)
        assert replica.refused_since == first  # since the first refusal, not the latest
        refuse[0] = False
        await put(store, "a")
        await wait_revision(replica, 1)
        assert replica.refused_since is None
        nursery.cancel_scope.cancel()
