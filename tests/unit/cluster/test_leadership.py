"""Leadership on the fake lease authority (virtual time) with a real cluster.db:
one leader at a time, epochs from the lease, stepping down before the lease lapses."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from zsd.cluster.leadership import Leadership, LeadershipState
from zsd.cluster.lease import LeaseConfig
from zsd.cluster.lease.fake import FakeAuthority, FakeLeaseStorage
from zsd.cluster.store import ClusterDb, Put, verify
from zsd.errors import ZsdError


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jump only when idle for a while in real time: sqlite runs in worker threads.
    return trio.testing.MockClock(autojump_threshold=0.02)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # As `zsd cluster init` leaves it: created by host 1 under the first epoch.
    path = tmp_path / "cluster.db"
    ClusterDb.create(path, epoch=1, owner="host-1").close()
    return path


async def hosts(n: int) -> tuple[FakeLeaseStorage, list[FakeAuthority]]:
    storage = FakeLeaseStorage(clock=trio.current_time)
    config = LeaseConfig(shared_dir=Path("/nonexistent"), lockspace="t", io_timeout=10)
    auths = [FakeAuthority(storage=storage, config=config, host=f"h{i + 1}") for i in range(n)]
    await auths[0].init_storage()
    for i, a in enumerate(auths):
        await a.join(i + 1)
    return storage, auths


def leadership(auth: FakeAuthority, db_path: Path) -> Leadership:
    return Leadership(authority=auth, db_path=db_path, owner=f"host-{auth.host_id}", retry_interval=1.0)


async def wait_until(lead: Leadership, leading: bool) -> LeadershipState:
    while lead.state.leading != leading:
        await lead.wait_changed()
    return lead.state


async def test_single_host_leads_and_writes(clock: trio.testing.MockClock, db_path: Path) -> None:
    _, (h1,) = await hosts(1)
    lead = leadership(h1, db_path)
    async with trio.open_nursery() as nursery:
        state = await nursery.start(lead.run)
        assert state.leading and state.epoch == 1 and state.leader_host_id == 1
        assert state.store is not None
        result = await state.store.commit([Put(kind="k", name="a", data=b"1")])
        assert result.revision == 1
        nursery.cancel_scope.cancel()
    assert verify(db_path) == ()


async def test_process_kill_hands_over_with_next_epoch(clock: trio.testing.MockClock, db_path: Path) -> None:
    _, (h1, h2) = await hosts(2)
    l1, l2 = leadership(h1, db_path), leadership(h2, db_path)
    async with trio.open_nursery() as nursery:
        s1 = await nursery.start(l1.run)
        scope2 = trio.CancelScope()

        async def run2() -> None:
            with scope2:
                await l2.run()

        nursery.start_soon(run2)
        await trio.sleep(5)
        assert s1.leading and not l2.state.leading
        assert l2.state.leader_host_id == 1 and l2.state.epoch == 1
        assert s1.store is not None
        await s1.store.commit([Put(kind="k", name="before", data=b"x")])
        # kill -9 of h1's zsd: its task vanishes, the lease daemon releases the lease.
        killed_at = trio.current_time()
        h1.kill()
        s2 = await wait_until(l2, True)
        assert s2.epoch == 2 and s2.leader_host_id == 2
        assert trio.current_time() - killed_at <= 1.5  # one campaign retry
        assert s2.store is not None
        assert (await s2.store.get("k", "before")) is not None
        await s2.store.commit([Put(kind="k", name="after", data=b"y")])
        nursery.cancel_scope.cancel()
    epochs = [(e.epoch, e.owner) for e in ClusterDb.open(db_path, epoch=3, owner="check").epochs()]
    assert epochs == [(1, "host-1"), (2, "host-2"), (3, "check")]


async def test_lost_renewal_steps_down_before_anyone_can_take_over(
    clock: trio.testing.MockClock, db_path: Path
) -> None:
    storage, (h1, h2) = await hosts(2)
    l1, l2 = leadership(h1, db_path), leadership(h2, db_path)
    timing = h1.config.timing
    async with trio.open_nursery() as nursery:
        s1 = await nursery.start(l1.run)
        nursery.start_soon(l2.run)
        assert s1.store is not None
        store1 = s1.store
        await trio.sleep(3)
        storage.fail_renewal("h1")  # h1 loses its shared storage
        failed_at = trio.current_time()
        await wait_until(l1, False)
        stepped_down_at = trio.current_time()
        with pytest.raises(ZsdError):
            await store1.commit([Put(kind="k", name="late", data=b"z")])
        s2 = await wait_until(l2, True)
        took_over_at = trio.current_time()
        nursery.cancel_scope.cancel()
    # h1 stopped writing well before h2 could take the lease (host_dead after the last renewal).
    assert stepped_down_at < took_over_at
    assert stepped_down_at - failed_at <= timing.stale_after + timing.renewal_interval + 1
    assert took_over_at - failed_at >= timing.host_dead - timing.renewal_interval
    assert s2.epoch == 2
    assert verify(db_path) == ()


async def test_lease_daemon_failure_steps_down_and_keeps_campaigning(
    clock: trio.testing.MockClock, db_path: Path
) -> None:
    storage, (h1,) = await hosts(1)
    lead = leadership(h1, db_path)
    async with trio.open_nursery() as nursery:
        state = await nursery.start(lead.run)
        assert state.leading
        storage.crash_daemon("h1")  # every lease call of h1 now fails
        after = await wait_until(lead, False)
        assert after.store is None
        await trio.sleep(10)  # Leadership.run survives and keeps retrying
        assert not lead.state.leading
        nursery.cancel_scope.cancel()
    assert lead.terms == 1
