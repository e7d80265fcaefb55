"""The Authority contract: the same tests run on the fake and on real sanlock daemons.

A suite subclasses :class:`AuthorityContract` and provides two fixtures giving a
:class:`LeaseCluster`: ``cluster`` (hosts 1 and 2 joined, no leader; may be shared
between tests) and ``crash_cluster`` (the same, but its host 1 may be destroyed),
and a ``clock`` fixture: the trio clock of the test run (pytest-trio only takes a
clock from the test's own arguments), a MockClock for virtual time or None.
Times are on the authorities' clock, so one test body serves virtual time (fake)
and real time (sanlock); ``slack`` is what real scheduling adds to sanlock's bounds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import pytest
import trio
from trio.abc import Clock

from zsd.cluster.lease import Authority, HostStatus, LeaderRecord, LeaseConfig, LeaseTiming, Renewal
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable

T = TypeVar("T")


class LeaseCluster(Protocol):
    config: LeaseConfig
    timing: LeaseTiming
    slack: float

    def authority(self, index: int) -> Authority:
        """The current process of host ``index + 1`` (joined)."""
        ...

    def unjoined(self, index: int) -> Authority:
        """A new process on host ``index + 1`` that has not called join."""
        ...

    async def kill_process(self, index: int) -> None:
        """kill -9 of host ``index + 1``'s process; ``authority(index)`` is then a new, joined one."""
        ...

    async def crash_daemon(self, index: int) -> None:
        """kill -9 of host ``index + 1``'s lease daemon."""
        ...

    def report(self, line: str) -> None:
        """Keeps a measured number for the test report."""
        ...


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = 0.25
) -> T:
    with trio.fail_after(timeout):
        while True:
            value = await probe()
            if value is not None and value is not False:
                return value
            await trio.sleep(interval)


class AuthorityContract:
    async def test_both_hosts_joined_and_seen_live(self, cluster: LeaseCluster, clock: Clock | None) -> None:
        a, b = cluster.authority(0), cluster.authority(1)
        assert (a.host_id, b.host_id) == (1, 2)

        async def both_live() -> bool:
            try:
                states = await a.host_states()
            except Unavailable as e:
                assert e.reason == "LEASE_NOT_READY"  # no view yet, just after joining
                return False
            return all(h in states and states[h].status is HostStatus.LIVE for h in (1, 2))

        # A peer is UNKNOWN until its timestamp was seen changing once.
        await eventually(both_live, timeout=2 * cluster.timing.renewal_interval + cluster.slack)
        states = await b.host_states()
        assert states[2].status is HostStatus.LIVE
        assert states[1].generation >= 1 and states[2].generation >= 1

    async def test_one_leader_at_a_time(self, cluster: LeaseCluster, clock: Clock | None) -> None:
        a, b = cluster.authority(0), cluster.authority(1)
        epoch = await a.acquire_leader()
        assert epoch is not None
        try:
            assert await b.acquire_leader() is None
            assert await a.acquire_leader() == epoch  # already held: same epoch
            assert await b.leader() == LeaderRecord(owner=1, epoch=epoch)
        finally:
            await a.release_leader()
        await a.release_leader()  # idempotent
        assert await b.leader() == LeaderRecord(owner=None, epoch=epoch)

    async def test_concurrent_acquire_has_one_winner(
        self, cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        results: dict[int, int | None] = {}

        async def attempt(index: int) -> None:
            results[index] = await cluster.authority(index).acquire_leader()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, 0)
            nursery.start_soon(attempt, 1)
        winners = [i for i, epoch in results.items() if epoch is not None]
        assert len(winners) == 1, results
        winner, loser = winners[0], 1 - winners[0]
        assert await cluster.authority(loser).acquire_leader() is None
        assert (await cluster.authority(loser).leader()).owner == winner + 1
        await cluster.authority(winner).release_leader()

    async def test_epoch_goes_up_by_one_per_acquisition(
        self, cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        a, b = cluster.authority(0), cluster.authority(1)
        epochs = []
        for holder in (a, b, a, a):
            epoch = await holder.acquire_leader()
            assert epoch is not None
            epochs.append(epoch)
            await holder.release_leader()
        assert epochs == list(range(epochs[0], epochs[0] + 4))
        assert await b.leader() == LeaderRecord(owner=None, epoch=epochs[-1])

    async def test_renewal_is_healthy_with_a_deadline_ahead(
        self, cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        a = cluster.authority(0)
        renewal = await a.renewal()
        now = a.now()
        t = cluster.timing
        assert renewal.healthy and renewal.reason == ""
        assert renewal.last_renewal is not None
        assert now - t.stale_after <= renewal.last_renewal <= now
        assert renewal.valid_until == renewal.last_renewal + t.host_dead - t.safety_margin
        assert now < renewal.valid_until <= now + t.host_dead

    async def test_valid_until_moves_forward_only(self, cluster: LeaseCluster, clock: Clock | None) -> None:
        a = cluster.authority(0)
        first = await a.renewal()
        seen = [first.valid_until]
        with trio.move_on_after(2 * cluster.timing.renewal_interval + cluster.slack):
            while seen[-1] == first.valid_until:
                await trio.sleep(cluster.timing.io_timeout / 4)
                seen.append((await a.renewal()).valid_until)
        assert seen == sorted(seen)
        assert seen[-1] > first.valid_until

    async def test_a_process_must_join_first(self, cluster: LeaseCluster, clock: Clock | None) -> None:
        fresh = cluster.unjoined(0)
        try:
            assert fresh.host_id is None
            for call in (fresh.acquire_leader, fresh.renewal, fresh.host_states):
                with pytest.raises(FailedPrecondition) as info:
                    await call()
                assert info.value.reason == "LOCKSPACE_NOT_JOINED"
            with pytest.raises(InvalidArgument):
                await fresh.join(0)
            with pytest.raises(InvalidArgument):
                await fresh.join(cluster.config.max_hosts + 1)
            # The host's daemon is already in the lockspace: a new process adopts it at once.
            with trio.fail_after(cluster.timing.io_timeout):
                await fresh.join(1)
            assert fresh.host_id == 1
            assert (await fresh.renewal()).healthy
            assert await fresh.acquire_leader() is not None
            assert await cluster.authority(1).acquire_leader() is None
        finally:
            await fresh.release_leader()
            await fresh.aclose()

    async def test_init_storage_refuses_to_overwrite(
        self, cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        with pytest.raises(AlreadyExists) as info:
            await cluster.authority(0).init_storage()
        assert info.value.reason == "LEASE_STORAGE_EXISTS"

    async def test_killed_process_releases_the_leader_lease(
        self, cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        epoch = await cluster.authority(0).acquire_leader()
        assert epoch is not None
        await cluster.kill_process(0)
        b = cluster.authority(1)
        started = b.now()
        taken = await eventually(b.acquire_leader, timeout=2 * cluster.timing.io_timeout + cluster.slack)
        cluster.report(f"leader taken over {b.now() - started:.2f} s after its process was killed")
        assert taken == epoch + 1
        assert await cluster.authority(0).acquire_leader() is None
        await b.release_leader()

    async def test_leaving_frees_the_host_id(self, cluster: LeaseCluster, clock: Clock | None) -> None:
        a, b = cluster.authority(0), cluster.authority(1)
        epoch = await b.acquire_leader()
        assert epoch is not None
        await b.leave()
        assert b.host_id is None
        assert await a.acquire_leader() == epoch + 1
        await a.release_leader()

        async def host2_free() -> bool:
            return 2 not in await a.host_states()  # a free host id is not listed

        await eventually(host2_free, timeout=2 * cluster.timing.renewal_interval + cluster.slack)
        started = b.now()
        await b.join(2)
        cluster.report(f"join (add_lockspace) took {b.now() - started:.2f} s")
        assert b.now() - started <= cluster.timing.join_max + cluster.slack

    async def test_daemon_crash_fails_over_after_host_dead(
        self, crash_cluster: LeaseCluster, clock: Clock | None
    ) -> None:
        cluster = crash_cluster
        a, b, t = cluster.authority(0), cluster.authority(1), cluster.timing
        epoch = await a.acquire_leader()
        assert epoch is not None

        # A process that adopted a fresh membership sees its renewals only after the
        # daemon's first look at storage.
        async def healthy() -> Renewal | None:
            renewal = await a.renewal()
            return renewal if renewal.healthy else None

        before = await eventually(healthy, timeout=t.renewal_interval + cluster.slack)
        await cluster.crash_daemon(0)
        crashed = b.now()

        # The stale leader learns at once; its deadline stays where it was.
        after = await a.renewal()
        assert not after.healthy
        assert after.valid_until == before.valid_until

        async def host1(status: HostStatus) -> bool:
            return (await b.host_states())[1].status is status

        # Peers count from when *they* saw host 1's last renewal, at one of their own
        # renewals: up to one renewal interval after it was written.
        late = t.renewal_interval + cluster.slack
        await eventually(lambda: host1(HostStatus.FAIL), timeout=t.renewal_fail + late)
        failed = b.now()
        assert await b.acquire_leader() is None  # failing is not dead: no takeover yet
        taken = await eventually(b.acquire_leader, timeout=t.host_dead + late, interval=0.5)
        took = b.now()
        assert taken == epoch + 1
        assert await host1(HostStatus.DEAD)
        # The safety property: host 1 had to stop writing before host 2 could lead.
        assert after.valid_until < took
        assert took - crashed <= t.host_dead + late
        cluster.report(
            f"daemon kill -> host 1 FAIL after {failed - crashed:.1f} s (renewal_fail {t.renewal_fail:g}), "
            f"leader taken over after {took - crashed:.1f} s (host_dead {t.host_dead:g}); "
            f"stale leader's valid_until was {took - after.valid_until:.1f} s before the takeover"
        )
        await b.release_leader()
