"""The fake's own behaviour beyond the shared contract: storage loss, daemon restarts."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.unit.lease.conftest import FakeCluster
from zsd.cluster.lease import HostStatus, LeaseConfig
from zsd.cluster.lease.fake import FakeAuthority, FakeLeaseStorage
from zsd.errors import Conflict, FailedPrecondition, Unavailable


async def test_join_needs_initialised_storage(clock: trio.testing.MockClock, config: LeaseConfig) -> None:
    storage = FakeLeaseStorage(clock=trio.current_time)
    with pytest.raises(FailedPrecondition) as info:
        await FakeAuthority(storage=storage, config=config, host="h1").join(1)
    assert info.value.reason == "LEASE_STORAGE_INVALID"


async def test_host_id_of_a_live_host_cannot_be_taken(
    cluster: FakeCluster, clock: trio.testing.MockClock
) -> None:
    intruder = FakeAuthority(storage=cluster.storage, config=cluster.config, host="h3")
    with pytest.raises(Conflict) as info:
        await intruder.join(1)
    assert info.value.reason == "HOST_ID_IN_USE"
    await intruder.join(3)
    assert set(await intruder.host_states()) == {1, 2, 3}


async def test_storage_loss_kills_the_leader_and_hands_over_after_host_dead(
    cluster: FakeCluster, clock: trio.testing.MockClock
) -> None:
    a, b, t = cluster.authority(0), cluster.authority(1), cluster.timing
    epoch = await a.acquire_leader()
    assert epoch is not None
    cluster.storage.fail_renewal("h1")
    lost_at = trio.current_time()
    last = (await a.renewal()).last_renewal
    assert last is not None

    await trio.sleep(t.stale_after + 1 - (trio.current_time() - last))
    stale = await a.renewal()
    assert (stale.healthy, stale.reason) == (False, "RENEWAL_STALE")
    with pytest.raises(Unavailable):
        await a.release_leader()  # storage is gone: the release cannot be written
    assert not a.killed

    # sanlock's recovery at renewal_fail kills the holder; the record still names host 1.
    await trio.sleep(t.renewal_fail - t.stale_after)
    assert (await b.host_states())[1].status is HostStatus.FAIL
    assert a.killed
    assert (await b.leader()).owner == 1
    assert await b.acquire_leader() is None

    await trio.sleep(t.host_dead - t.renewal_fail)
    assert (await b.host_states())[1].status is HostStatus.DEAD
    taken_at = trio.current_time()
    assert await b.acquire_leader() == epoch + 1
    assert stale.valid_until < taken_at
    assert taken_at - last > t.host_dead >= taken_at - lost_at - 1


async def test_storage_back_in_time_keeps_everything(
    cluster: FakeCluster, clock: trio.testing.MockClock
) -> None:
    a, t = cluster.authority(0), cluster.timing
    epoch = await a.acquire_leader()
    cluster.storage.fail_renewal("h1")
    await trio.sleep(t.stale_after + 1)
    assert not (await a.renewal()).healthy
    cluster.storage.restore_renewal("h1")
    assert (await a.renewal()).healthy
    assert await a.acquire_leader() == epoch
    await trio.sleep(t.host_dead)
    assert not a.killed
    assert (await cluster.authority(1).host_states())[1].status is HostStatus.LIVE


async def test_storage_back_too_late_loses_the_lockspace(
    cluster: FakeCluster, clock: trio.testing.MockClock
) -> None:
    a, t = cluster.authority(0), cluster.timing
    cluster.storage.fail_renewal("h1")
    await trio.sleep(t.renewal_fail + t.renewal_interval)
    cluster.storage.restore_renewal("h1")
    renewal = await a.renewal()
    assert (renewal.healthy, renewal.reason) == (False, "LOCKSPACE_NOT_JOINED")
    with pytest.raises(FailedPrecondition):
        await a.acquire_leader()


async def test_restarted_daemon_rejoins_only_after_its_old_lease_expired(
    cluster: FakeCluster, clock: trio.testing.MockClock
) -> None:
    a, t = cluster.authority(0), cluster.timing
    epoch = await a.acquire_leader()
    assert epoch is not None
    cluster.storage.crash_daemon("h1")
    with pytest.raises(Unavailable) as info:
        await a.acquire_leader()
    assert info.value.reason == "LEASE_DAEMON_UNAVAILABLE"
    a.kill()  # the old process dies too; with no daemon nothing is released
    assert (await cluster.authority(1).leader()).owner == 1

    cluster.storage.restart_daemon("h1")
    fresh = FakeAuthority(storage=cluster.storage, config=cluster.config, host="h1")
    with pytest.raises(Unavailable) as info:
        await fresh.join(1)
    assert info.value.reason == "HOST_LEASE_NOT_EXPIRED"
    await trio.sleep(t.host_dead + t.renewal_interval)
    await fresh.join(1)
    states = await fresh.host_states()
    assert states[1].generation == 2
    # The leader record names host 1's old generation: stale, so free to take.
    assert await fresh.acquire_leader() == epoch + 1


async def test_killed_process_can_do_nothing(cluster: FakeCluster, clock: trio.testing.MockClock) -> None:
    a = cluster.authority(0)
    a.kill()
    with pytest.raises(FailedPrecondition) as info:
        await a.renewal()
    assert info.value.reason == "PROCESS_KILLED"


async def test_renewals_are_discrete(cluster: FakeCluster, clock: trio.testing.MockClock) -> None:
    a, t = cluster.authority(0), cluster.timing
    first = await a.renewal()
    await trio.sleep(t.renewal_interval / 2)
    assert (await a.renewal()).last_renewal == first.last_renewal
    await trio.sleep(t.renewal_interval)
    assert (await a.renewal()).last_renewal == (first.last_renewal or 0) + t.renewal_interval
