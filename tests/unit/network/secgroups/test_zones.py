"""Conntrack zones: one per bridge, from zsd's range, stable, collisions resolved."""

from __future__ import annotations

import itertools
from dataclasses import replace

from tests.unit.network.secgroups.hosts import three_tier
from zsd.network.secgroups.compiler import Compiler, compile_ruleset
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic, membership
from zsd.network.secgroups.zones import ZONE_COUNT, ZONE_FIRST, ZoneAllocator, is_zsd_zone, preferred_zone

WEB = HostNic(port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), groups=("web",), bridge="zb1")
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.1",), groups=("app",), bridge="zb2")
OLD = HostNic(port="tap-old", mac="52:54:00:00:00:03", ipv4=("10.0.0.3",))


def host(*nics: HostNic) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(), members=membership(nics))


def colliding_pair() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in itertools.count():
        name = f"zb{i:010x}"
        zone = preferred_zone(name)
        if zone in seen:
            return seen[zone], name
        seen[zone] = name
    raise AssertionError("unreachable")


def test_a_bridge_prefers_the_same_zone_everywhere_inside_zsds_range() -> None:
    zones = ZoneAllocator().assign(["zb1", "zb2"])
    assert zones == {"zb1": preferred_zone("zb1"), "zb2": preferred_zone("zb2")}
    assert all(is_zsd_zone(z) for z in zones.values())
    assert not is_zsd_zone(0) and not is_zsd_zone(ZONE_FIRST + ZONE_COUNT)


def test_a_collision_takes_the_next_free_zone_whatever_the_order() -> None:
    a, b = colliding_pair()
    first = ZoneAllocator().assign([a, b])
    assert first == ZoneAllocator().assign([b, a])
    assert len(set(first.values())) == 2
    assert first[min(a, b)] == preferred_zone(a)


def test_a_bridge_keeps_its_zone_while_it_stays() -> None:
    a, b = colliding_pair()
    later = max(a, b)  # would win the preferred zone in a fresh allocation
    allocator = ZoneAllocator()
    alone = allocator.assign([later])
    both = allocator.assign([later, min(a, b)])
    assert both[later] == alone[later] == preferred_zone(later)
    assert both[min(a, b)] != both[later]
    assert allocator.assign([min(a, b)]) == {min(a, b): both[min(a, b)]}  # not moved back


def test_the_ruleset_zones_each_bridge_before_conntrack() -> None:
    compiled = compile_ruleset(host(WEB, APP, OLD))
    assert set(compiled.zones) == {"zb1", "zb2"}  # OLD has no bridge: the default zone
    inet = compiled.ruleset.tables[1]
    bridge_zones = next(s for s in inet.sets if s.name == "bridge_zones")
    assert bridge_zones.elements == tuple(
        (b, {"goto": {"target": f"zone_{z}"}}) for b, z in sorted(compiled.zones.items())
    )
    for zone in compiled.zones.values():
        (chain,) = [c for c in inet.chains if c.name == f"zone_{zone}"]
        assert chain.rules == (({"mangle": {"key": {"ct": {"key": "zone"}}, "value": zone}},),)


def test_zones_stay_stable_across_compiles_and_restarts_with_the_previous_ruleset() -> None:
    compiler = Compiler()
    first = compiler.compile(host(WEB))
    second = compiler.compile(host(WEB, APP))
    assert second.zones["zb1"] == first.zones["zb1"]
    assert Compiler(previous=second).compile(host(APP, WEB)).zones == second.zones
    gone = compiler.compile(host(replace(APP, bridge="zb3")))
    assert set(gone.zones) == {"zb3"}
