"""Each filter rejects a host with its own reason; the NO_VALID_HOST error names every
host with that reason, in the message and in its metadata."""

from __future__ import annotations

import pytest

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Overcommit, Placement, VmDemand
from zsd.errors import InvalidArgument, ResourceExhausted


def host(name: str, **kw: object) -> HostState:
    base: dict[str, object] = {"alive": True, "lease_live": True, "cpus": 4, "memory_mib": 8192}
    return HostState(name=name, **{**base, **kw})  # type: ignore[arg-type]


def vm(name: str = "vm", **kw: object) -> VmDemand:
    base: dict[str, object] = {"vcpus": 2, "memory_mib": 1024}
    return VmDemand(name=name, **{**base, **kw})  # type: ignore[arg-type]


def rejection(h: HostState, demand: VmDemand, overcommit: Overcommit | None = None) -> str:
    """The one reason ``h`` is rejected for, next to a host that always fits."""
    good = host("zz-good", cpus=64, memory_mib=1 << 20, pools=demand.pools, networks=demand.networks)
    decision = Engine(hosts=[h, good], overcommit=overcommit).place(demand)
    assert decision.host == "zz-good"
    assert set(decision.rejected) == {h.name}
    return decision.rejected[h.name]


@pytest.mark.parametrize(
    ("h", "demand", "reason"),
    [
        (host("h", alive=False), vm(), "not alive"),
        (host("h", alive=False, lease_live=False), vm(), "not alive"),
        (host("h", lease_live=False), vm(), "sanlock lease not live"),
        (host("h", maintenance=True), vm(), "in maintenance"),
        (host("h", used_vcpus=15), vm(vcpus=2), "1 vCPUs free of 16 (needs 2)"),
        (host("h", used_memory_mib=8000), vm(memory_mib=256), "192 MiB free of 8192 (needs 256)"),
        (
            host("h", pools=frozenset({"p1"})),
            vm(pools=frozenset({"p1", "p2", "p3"})),
            "cannot reach pool(s) p2, p3",
        ),
        (
            host("h", networks=frozenset({"a"})),
            vm(networks=frozenset({"a", "b"})),
            "lacks network(s) b",
        ),
    ],
)
def test_each_filter_says_why_it_rejects_a_host(h: HostState, demand: VmDemand, reason: str) -> None:
    assert rejection(h, demand) == reason


def test_fixed_reasons_come_before_capacity() -> None:
    # Dead and full: the host could never run the VM, so "full" would mislead.
    assert rejection(host("h", alive=False, used_vcpus=16), vm()) == "not alive"
    assert rejection(host("h", used_vcpus=16), vm(pools=frozenset({"p"}))) == "cannot reach pool(s) p"


def test_capacity_is_scaled_by_the_overcommit_ratios_inclusively() -> None:
    # 4 threads x 1.5 = 6 vCPUs; 8192 MiB x 1.25 = 10240 MiB: exactly full still fits.
    ratios = Overcommit(cpu=1.5, memory=1.25)
    engine = Engine(hosts=[host("h", used_vcpus=4, used_memory_mib=9216)], overcommit=ratios)
    assert engine.place(vm("a", vcpus=2, memory_mib=1024)).host == "h"
    assert engine.free("h") == (0, 0)
    assert rejection(host("h", used_vcpus=5), vm(vcpus=2), ratios) == "1 vCPUs free of 6 (needs 2)"


def test_no_valid_host_names_every_host_in_order_with_its_reason() -> None:
    hosts = [
        host("h4", alive=False),
        host("h3", cpus=4, used_vcpus=14),
        host("h1", maintenance=True),
        host("h2", used_memory_mib=8000),
    ]
    engine = Engine(hosts=hosts)
    with pytest.raises(ResourceExhausted) as err:
        engine.place(vm("web-1", vcpus=4, pools=frozenset({"ceph"})))
    e = err.value
    assert e.reason == "NO_VALID_HOST"
    assert e.message == (
        "no host can run VM 'web-1' (4 vCPUs, 1024 MiB): h1: in maintenance; "
        "h2: cannot reach pool(s) ceph; h3: cannot reach pool(s) ceph; h4: not alive"
    )
    assert dict(e.metadata) == {
        "h1": "in maintenance",
        "h2": "cannot reach pool(s) ceph",
        "h3": "cannot reach pool(s) ceph",
        "h4": "not alive",
    }
    with pytest.raises(ResourceExhausted) as err:
        engine.place(vm("web-1", vcpus=4))
    assert err.value.message.endswith(
        "h1: in maintenance; h2: 192 MiB free of 8192 (needs 1024); "
        "h3: 2 vCPUs free of 16 (needs 4); h4: not alive"
    )
    assert not engine.placements


def test_an_empty_cluster_says_so() -> None:
    with pytest.raises(ResourceExhausted, match="the cluster has no hosts"):
        Engine(hosts=[]).place(vm())


def test_existing_usage_comes_from_the_hosts_not_the_placements() -> None:
    # The placement is already inside used_*; counting it again would refuse this VM.
    engine = Engine(
        hosts=[host("h", used_vcpus=8, used_memory_mib=4096)],
        placements={"old": Placement(host="h", vcpus=8, memory_mib=4096)},
    )
    assert engine.place(vm(vcpus=8, memory_mib=4096)).host == "h"
    engine.release("old")
    assert engine.free("h") == (8, 4096)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cpu": 0.0}, "overcommit.cpu"),
        ({"cpu": 33.0}, "overcommit.cpu"),
        ({"cpu": float("nan")}, "overcommit.cpu"),
        ({"memory": -1.0}, "overcommit.memory"),
        ({"memory": 4.5}, "overcommit.memory"),
    ],
)
def test_overcommit_ratios_are_bounded(kw: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Overcommit(**kw)
    assert err.value.field == field
    assert Overcommit(cpu=32.0, memory=4.0).vcpus(3) == 96


@pytest.mark.parametrize(
    ("demand", "field"),
    [(vm(""), "vm.name"), (vm(vcpus=0), "vm.vcpus"), (vm(memory_mib=0), "vm.memory_mib")],
)
def test_a_malformed_demand_names_its_field(demand: VmDemand, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Engine(hosts=[host("h")]).place(demand)
    assert err.value.field == field
