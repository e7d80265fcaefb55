"""RenewalMonitor on the fake, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from tests.unit.lease.conftest import FakeCluster
from zsd.cluster.lease import RenewalMonitor


async def test_reports_health_then_loss(cluster: FakeCluster, clock: trio.testing.MockClock) -> None:
    a, t = cluster.authority(0), cluster.timing
    monitor = RenewalMonitor(a)
    async with trio.open_nursery() as nursery:
        first = await nursery.start(monitor.run)
        assert first.healthy and monitor.latest == first
        await trio.sleep(3 * t.renewal_interval)
        assert monitor.latest is not None and monitor.latest.healthy
        assert monitor.latest.valid_until > first.valid_until

        cluster.storage.fail_renewal("h1")
        failed_at = trio.current_time()
        lost = await monitor.wait_unhealthy()
        assert lost.reason == "RENEWAL_STALE"
        # Noticed within one poll of the threshold, long before the deadline.
        assert trio.current_time() - failed_at <= t.stale_after + t.io_timeout / 2
        assert trio.current_time() < lost.valid_until
        assert await monitor.wait_unhealthy() == monitor.latest  # already unhealthy: at once
        nursery.cancel_scope.cancel()
