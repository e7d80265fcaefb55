from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from zsd.cluster.lease import LeaseConfig
from zsd.cluster.lease.fake import FakeAuthority, FakeLeaseStorage


class FakeCluster:
    """Two fake hosts (h1, h2 with host ids 1, 2) on one fake storage."""

    def __init__(self, *, storage: FakeLeaseStorage, config: LeaseConfig) -> None:
        self.storage = storage
        self.config = config
        self.timing = config.timing
        # Polling in the contract tests lands up to one poll after a bound.
        self.slack = 1.0
        self.reports: list[str] = []
        self._current = [self.unjoined(0), self.unjoined(1)]

    def authority(self, index: int) -> FakeAuthority:
        return self._current[index]

    def unjoined(self, index: int) -> FakeAuthority:
        return FakeAuthority(storage=self.storage, config=self.config, host=f"h{index + 1}")

    async def kill_process(self, index: int) -> None:
        self._current[index].kill()
        fresh = self.unjoined(index)
        await fresh.join(index + 1)
        self._current[index] = fresh

    async def crash_daemon(self, index: int) -> None:
        self.storage.crash_daemon(f"h{index + 1}")

    def report(self, line: str) -> None:
        self.reports.append(line)


@pytest.fixture
def config() -> LeaseConfig:
    return LeaseConfig(shared_dir=Path("/nonexistent/shared"), lockspace="test", io_timeout=10)


@pytest.fixture
async def cluster(clock: trio.testing.MockClock, config: LeaseConfig) -> FakeCluster:
    # pytest-trio takes the run's clock only from the test's own arguments.
    assert trio.lowlevel.current_clock() is clock, "request the `clock` fixture in the test"
    storage = FakeLeaseStorage(clock=trio.current_time)
    c = FakeCluster(storage=storage, config=config)
    await c.authority(0).init_storage()
    await c.authority(0).join(1)
    await c.authority(1).join(2)
    return c


@pytest.fixture
async def crash_cluster(cluster: FakeCluster) -> FakeCluster:
    return cluster


@pytest.fixture
def clock(autojump_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    return autojump_clock
