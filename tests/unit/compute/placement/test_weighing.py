"""Spread puts a VM where the most memory is free; pack where the least is, as long as
it fits; ties break by host name so the same state always gives the same host."""

from __future__ import annotations

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, VmDemand


def host(name: str, **kw: object) -> HostState:
    base: dict[str, object] = {"alive": True, "lease_live": True, "cpus": 8, "memory_mib": 8192}
    return HostState(name=name, **{**base, **kw})  # type: ignore[arg-type]


def vm(name: str, vcpus: int = 1, memory_mib: int = 1024) -> VmDemand:
    return VmDemand(name=name, vcpus=vcpus, memory_mib=memory_mib)


HOSTS = [
    host("a", used_memory_mib=6144),  # 25% free
    host("b", memory_mib=16384, used_memory_mib=8192),  # 50% free, 8192 MiB
    host("c", used_memory_mib=2048),  # 75% free, 6144 MiB
]


def test_spread_takes_the_largest_free_memory_fraction() -> None:
    assert Engine(hosts=HOSTS).place(vm("x")).host == "c"


def test_spread_breaks_a_memory_tie_by_the_lowest_vcpu_use_then_by_name() -> None:
    hosts = [host("a", used_vcpus=4), host("b", used_vcpus=2), host("c", used_vcpus=2)]
    assert Engine(hosts=hosts).place(vm("x")).host == "b"


def test_spread_spreads_a_run_of_equal_vms_over_all_hosts() -> None:
    engine = Engine(hosts=[host(f"h{i}") for i in range(4)])
    placed = [engine.place(vm(f"v{i}")).host for i in range(8)]
    assert placed[:4] == ["h0", "h1", "h2", "h3"]
    assert sorted(placed) == ["h0", "h0", "h1", "h1", "h2", "h2", "h3", "h3"]


def test_pack_takes_the_least_free_memory_that_still_fits() -> None:
    engine = Engine(hosts=HOSTS, strategy="pack")
    assert engine.place(vm("small")).host == "a"
    # 1024 MiB left on a: too little for 3072; c (6144 free) beats b (8192 free).
    assert engine.place(vm("big", memory_mib=3072)).host == "c"


def test_pack_fills_one_host_before_the_next() -> None:
    engine = Engine(hosts=[host("h1"), host("h2")], strategy="pack")
    placed = [engine.place(vm(f"v{i}", memory_mib=2048)).host for i in range(6)]
    assert placed == ["h1", "h1", "h1", "h1", "h2", "h2"]


def test_release_gives_the_host_back_its_weight() -> None:
    engine = Engine(hosts=[host("h1"), host("h2")])
    assert engine.place(vm("v1", memory_mib=4096)).host == "h1"
    assert engine.place(vm("v2")).host == "h2"
    engine.release("v1")
    assert engine.place(vm("v3")).host == "h1"
