"""A conntrack table in memory (a :class:`ConntrackTable`), strict where ctnetlink
is: a delete while a dump is being read is refused (one netlink socket cannot
interleave them), and deleting a gone entry says so."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator

from zsd.network.secgroups.admission import Flow


class FakeConntrack:
    def __init__(self, flows: Collection[Flow] = ()) -> None:
        self.entries: list[Flow] = list(flows)
        self.dumped_zones: list[int] = []
        self.dumped_addresses: list[tuple[int, str]] = []
        self.closed = False
        self._dumping = False

    def flows(self, zones: Collection[int]) -> Iterator[Flow]:
        self._dumping = True
        try:
            for zone in zones:
                self.dumped_zones.append(zone)
                yield from [f for f in self.entries if f.zone == zone]
        finally:
            self._dumping = False

    def size(self) -> int:
        return len(self.entries)

    def flows_of(self, zone: int, address: str) -> Iterator[Flow]:
        self._dumping = True
        try:
            self.dumped_addresses.append((zone, address))
            wanted = ipaddress.ip_address(address)
            ends = [f for f in self.entries if f.zone == zone]
            # two dumps, as the kernel's filter takes one original-tuple address
            yield from [f for f in ends if ipaddress.ip_address(f.src) == wanted]
            yield from [f for f in ends if ipaddress.ip_address(f.dst) == wanted]
        finally:
            self._dumping = False

    def delete(self, flow: Flow) -> bool:
        if self._dumping:
            raise RuntimeError("delete during a dump")
        if flow not in self.entries:
            return False
        self.entries.remove(flow)
        return True

    def close(self) -> None:
        self.closed = True
