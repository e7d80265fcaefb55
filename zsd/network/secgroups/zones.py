"""Conntrack zones: one per port group (bridge) on a host, so port groups with
overlapping subnets never share connection state.

Zones are 16-bit and host-local (conntrack is per host), and 0 is every packet's
default, so zsd takes its zones from a range of its own, ``ZONE_FIRST`` ..
``ZONE_FIRST + ZONE_COUNT - 1``, and nothing outside that range is ever zsd's. A
bridge's zone is a hash of its name into the range (the same on every host and
after every restart); a collision is resolved by taking the next free zone, in
the order (hash, name), so the result depends only on the set of bridges. A
bridge keeps its zone while it has NICs here (the allocator remembers it), so a
port group arriving later never moves another one's connections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from zsd.errors import ResourceExhausted

ZONE_FIRST = 0x4000
ZONE_COUNT = 0x4000


def preferred_zone(bridge: str) -> int:
    digest = hashlib.sha256(bridge.encode()).digest()
    return ZONE_FIRST + int.from_bytes(digest[:4], "big") % ZONE_COUNT


def is_zsd_zone(zone: int) -> bool:
    return ZONE_FIRST <= zone < ZONE_FIRST + ZONE_COUNT


class ZoneAllocator:
    """Bridge -> zone, stable while a bridge stays (see the module docstring)."""

    def __init__(self, previous: Mapping[str, int] | None = None) -> None:
        self._zones: dict[str, int] = dict(previous or {})

    def assign(self, bridges: Iterable[str]) -> dict[str, int]:
        present = set(bridges)
        if len(present) > ZONE_COUNT:
            raise ResourceExhausted(
                f"more than {ZONE_COUNT} port groups on one host", reason="TOO_MANY_PORT_GROUPS"
            )
        zones = {b: z for b, z in self._zones.items() if b in present}
        used = set(zones.values())
        for bridge in sorted(present - zones.keys(), key=lambda b: (preferred_zone(b), b)):
            zone = preferred_zone(bridge)
            while zone in used:
                zone = ZONE_FIRST + (zone - ZONE_FIRST + 1) % ZONE_COUNT
            zones[bridge] = zone
            used.add(zone)
        self._zones = zones
        return dict(zones)
