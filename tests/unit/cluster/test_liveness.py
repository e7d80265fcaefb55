"""Liveness: the gossip x sanlock verdict table, and LeaseWatcher on the fake authority."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio
import trio.testing

from zsd.cluster.lease.authority import HostState, HostStatus, LeaseConfig
from zsd.cluster.lease.fake import FakeAuthority, FakeLeaseStorage
from zsd.cluster.liveness import LeaseView, LeaseWatcher, Liveness, verdict
from zsd.cluster.swim.member import MemberState
from zsd.errors import FailedPrecondition, InvalidArgument, Unavailable, ZsdError

G_ALIVE, G_SUSPECT, G_DEAD, G_LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)
L_UNKNOWN, L_FREE, L_LIVE, L_FAIL, L_DEAD = (
    HostStatus.UNKNOWN,
    HostStatus.FREE,
    HostStatus.LIVE,
    HostStatus.FAIL,
    HostStatus.DEAD,
)
ALIVE, UNREACHABLE, LEFT, DEAD = Liveness.ALIVE, Liveness.UNREACHABLE, Liveness.LEFT, Liveness.DEAD
INTERVAL = 2.0

# Every combination, written out rather than derived: this is the specification.
# Columns: lease None, UNKNOWN, FREE, LIVE, FAIL, DEAD.
LEASES = (None, L_UNKNOWN, L_FREE, L_LIVE, L_FAIL, L_DEAD)
TABLE: dict[MemberState | None, tuple[Liveness, ...]] = {
    G_ALIVE: (ALIVE, ALIVE, ALIVE, ALIVE, ALIVE, DEAD),
    G_SUSPECT: (UNREACHABLE, UNREACHABLE, LEFT, UNREACHABLE, UNREACHABLE, DEAD),
    G_DEAD: (UNREACHABLE, UNREACHABLE, LEFT, UNREACHABLE, UNREACHABLE, DEAD),
    G_LEFT: (LEFT, LEFT, LEFT, LEFT, LEFT, DEAD),
    None: (UNREACHABLE, UNREACHABLE, LEFT, UNREACHABLE, UNREACHABLE, DEAD),
}


@pytest.mark.parametrize(
    ("gossip", "lease", "expected"),
    [(g, lease, row[i]) for g, row in TABLE.items() for i, lease in enumerate(LEASES)],
)
def test_verdict_table(gossip: MemberState | None, lease: HostStatus | None, expected: Liveness) -> None:
    assert verdict(gossip, lease) is expected


def test_table_covers_every_combination() -> None:
    assert set(TABLE) == {*MemberState, None}
    assert set(LEASES) == {*HostStatus, None}
    assert all(len(row) == len(LEASES) for row in TABLE.values())


def test_only_sanlock_makes_a_host_dead() -> None:
    for gossip, lease in itertools.product([*MemberState, None], [*HostStatus, None]):
        assert (verdict(gossip, lease) is DEAD) == (lease is L_DEAD), (gossip, lease)


# -- LeaseWatcher ---------------------------------------------------------------------


class FlakyHostStates:
    """Passes ``host_states`` through to an authority, or raises ``error`` while it is set."""

    def __init__(self, inner: FakeAuthority) -> None:
        self.inner = inner
        self.error: ZsdError | None = None
        self.calls = 0

    async def host_states(self) -> Mapping[int, HostState]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return await self.inner.host_states()


@pytest.fixture
async def hosts(
    autojump_clock: trio.testing.MockClock,
) -> tuple[FakeLeaseStorage, FakeAuthority, FakeAuthority]:
    """Hosts h1 and h2 (host ids 1 and 2) joined on fake storage, in virtual time."""
    storage = FakeLeaseStorage(clock=trio.current_time)
    config = LeaseConfig(shared_dir=Path("/nonexistent/shared"), lockspace="test", io_timeout=10)
    h1 = FakeAuthority(storage=storage, config=config, host="h1")
    h2 = FakeAuthority(storage=storage, config=config, host="h2")
    await h1.init_storage()
    await h1.join(1)
    await h2.join(2)
    return storage, h1, h2


Hosts = tuple[FakeLeaseStorage, FakeAuthority, FakeAuthority]


async def test_flaky_host_states_passes_through_or_raises(hosts: Hosts) -> None:
    _, h1, _ = hosts
    flaky = FlakyHostStates(h1)
    assert await flaky.host_states() == await h1.host_states()
    flaky.error = Unavailable("down", reason="LEASE_DAEMON_UNAVAILABLE")
    with pytest.raises(Unavailable):
        await flaky.host_states()
    flaky.error = None
    assert set(await flaky.host_states()) == {1, 2}
    assert flaky.calls == 3


async def test_watcher_follows_a_host_from_live_to_dead(
    hosts: Hosts, autojump_clock: trio.testing.MockClock
) -> None:
    storage, h1, _ = hosts
    timing = storage.timing
    watcher = LeaseWatcher(h1, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        first = await nursery.start(watcher.run)
        assert first is watcher.view
        assert watcher.states == {1: L_LIVE, 2: L_LIVE}
        assert not watcher.view.stale and watcher.view.polled_at == trio.current_time()

        storage.crash_daemon("h2")  # h2 stops renewing
        crashed = trio.current_time()
        await trio.sleep(timing.renewal_fail + 2 * INTERVAL)
        assert watcher.states == {1: L_LIVE, 2: L_FAIL}
        await trio.sleep(crashed + timing.host_dead + 2 * INTERVAL - trio.current_time())
        assert watcher.states == {1: L_LIVE, 2: L_DEAD}
        # A dead lease wins even over gossip ALIVE; without it, unreachable is all gossip can say.
        assert verdict(MemberState.ALIVE, watcher.view.status(2)) is DEAD
        assert verdict(MemberState.SUSPECT, watcher.view.status(1)) is UNREACHABLE
        nursery.cancel_scope.cancel()


async def test_states_are_replaced_never_mutated(
    hosts: Hosts, autojump_clock: trio.testing.MockClock
) -> None:
    storage, h1, _ = hosts
    watcher = LeaseWatcher(h1, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        before_view, before = watcher.view, watcher.states
        with pytest.raises(TypeError):
            before[3] = L_LIVE  # type: ignore[index]
        storage.crash_daemon("h2")
        await trio.sleep(storage.timing.host_dead + 2)
        assert watcher.states[2] is L_DEAD
        assert before == {1: L_LIVE, 2: L_LIVE}  # what a reader already holds stays as it was
        assert before_view.states is before
        nursery.cancel_scope.cancel()


async def test_errors_keep_the_last_states_marked_stale_and_log_once_per_streak(
    hosts: Hosts, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="zsd.cluster.liveness")
    _, h1, _ = hosts
    flaky = FlakyHostStates(h1)
    watcher = LeaseWatcher(flaky, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        good = watcher.view
        assert not good.stale and good.polled_at == trio.current_time()
        started = trio.current_time()

        flaky.error = Unavailable("lease daemon not reachable", reason="LEASE_DAEMON_UNAVAILABLE")
        calls = flaky.calls
        await trio.sleep(4 * INTERVAL + 1)  # four failing polls
        assert flaky.calls - calls == 4
        stale = watcher.view
        assert stale.stale and stale.stale_since == started + INTERVAL  # the streak's first failure
        assert stale.error == "LEASE_DAEMON_UNAVAILABLE"
        assert stale.states is good.states and stale.polled_at == good.polled_at
        assert stale.status(2) is L_LIVE  # stale values stay readable; callers see .stale
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "lease daemon not reachable" in warnings[0].getMessage()

        flaky.error = None
        await trio.sleep(INTERVAL)  # from started + 4 intervals + 1 to just after the next poll
        fresh = watcher.view
        assert not fresh.stale and fresh.stale_since is None and fresh.error == ""
        assert fresh.polled_at == started + 5 * INTERVAL
        assert any("readable again" in r.getMessage() for r in caplog.records)

        flaky.error = FailedPrecondition("the lockspace was lost", reason="LOCKSPACE_NOT_JOINED")
        await trio.sleep(3 * INTERVAL)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and watcher.view.error == "LOCKSPACE_NOT_JOINED"
        nursery.cancel_scope.cancel()


async def test_starts_even_when_the_first_poll_fails(
    hosts: Hosts, autojump_clock: trio.testing.MockClock
) -> None:
    _, h1, _ = hosts
    flaky = FlakyHostStates(h1)
    flaky.error = Unavailable("not ready", reason="LEASE_NOT_READY")
    watcher = LeaseWatcher(flaky, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        view = await nursery.start(watcher.run)
        assert view.stale and view.polled_at is None and view.states == {}
        assert view.status(1) is None  # no information, not "free"
        flaky.error = None
        await trio.sleep(INTERVAL + 1)
        assert watcher.states == {1: L_LIVE, 2: L_LIVE}
        assert watcher.view.status(3) is L_FREE  # a fresh poll that does not list it
        nursery.cancel_scope.cancel()


def test_lease_view_before_any_poll() -> None:
    view = LeaseView()
    assert view.stale and view.states == {} and view.status(1) is None


async def test_interval_must_be_positive(hosts: Hosts) -> None:
    with pytest.raises(InvalidArgument) as info:
        LeaseWatcher(hosts[1], interval=0)
    assert info.value.field == "interval"
