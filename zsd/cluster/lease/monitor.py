"""RenewalMonitor: keeps asking the Authority whether our host lease is renewed.

The leader runs one and stops acting as leader when it turns unhealthy, and in any
case before ``latest.valid_until``.
"""

from __future__ import annotations

import trio

from zsd.cluster.lease.authority import Authority, Renewal


class RenewalMonitor:
    def __init__(self, authority: Authority, *, interval: float | None = None) -> None:
        self._authority = authority
        # Half an io timeout: fine-grained next to every sanlock bound (>= 2 io timeouts).
        self._interval = interval if interval is not None else max(authority.config.io_timeout / 2, 0.25)
        self._latest: Renewal | None = None
        self._changed = trio.Event()

    @property
    def latest(self) -> Renewal | None:
        return self._latest

    async def run(self, *, task_status: trio.TaskStatus[Renewal] = trio.TASK_STATUS_IGNORED) -> None:
        """Polls until cancelled; ``started`` with the first answer."""
        renewal = await self._poll()
        task_status.started(renewal)
        while True:
            await trio.sleep(self._interval)
            await self._poll()

    async def _poll(self) -> Renewal:
        renewal = await self._authority.renewal()
        self._latest = renewal
        self._changed.set()
        self._changed = trio.Event()
        return renewal

    async def wait_unhealthy(self) -> Renewal:
        """Returns the first unhealthy answer (at once if the latest is unhealthy)."""
        while self._latest is None or self._latest.healthy:
            await self._changed.wait()
        return self._latest
