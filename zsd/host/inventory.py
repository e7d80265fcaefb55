"""Keeps this host's inventory current: collected at start, then periodically
and on demand (RefreshHost). Collections never overlap."""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from zsd.host.model import HostFacts

log = logging.getLogger(__name__)


class Collector(Protocol):
    async def collect(self) -> HostFacts: ...


class Inventory:
    def __init__(self, *, collector: Collector, interval: float) -> None:
        self._collector = collector
        self.interval = interval
        self._lock = trio.Lock()
        self._facts: HostFacts | None = None

    @property
    def facts(self) -> HostFacts:
        if self._facts is None:
            raise RuntimeError("inventory used before its first collection")
        return self._facts

    async def refresh(self) -> HostFacts:
        async with self._lock:
            self._facts = await self._collector.collect()
            return self._facts

    async def run(self, *, task_status: trio.TaskStatus[Inventory] = trio.TASK_STATUS_IGNORED) -> None:
        await self.refresh()
        task_status.started(self)
        while True:
            await trio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                # Keep serving the previous inventory; the next round may succeed.
                log.exception("periodic inventory collection failed")
