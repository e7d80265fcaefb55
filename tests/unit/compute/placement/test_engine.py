"""The engine's own state: batches are all or nothing, a placed VM is placed once,
and the incremental group index and capacity always equal a full recount."""

from __future__ import annotations

import random

import pytest

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Overcommit, VmDemand
from zsd.compute.placement.policies import Policy
from zsd.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted


def hosts(n: int, memory_mib: int = 8192) -> list[HostState]:
    return [
        HostState(name=f"h{i}", alive=True, lease_live=True, cpus=4, memory_mib=memory_mib) for i in range(n)
    ]


def vm(name: str, group: str = "", memory_mib: int = 1024) -> VmDemand:
    return VmDemand(name=name, vcpus=1, memory_mib=memory_mib, group=group)


def test_a_batch_keeps_a_mandatory_rule_across_its_own_vms() -> None:
    e = Engine(
        hosts=hosts(3), policies=[Policy(name="p", kind="vm-exclusive", vm_group="g")], strategy="pack"
    )
    decisions = e.place_many([vm(f"v{i}", group="g") for i in range(3)])
    assert sorted(d.host for d in decisions) == ["h0", "h1", "h2"]


def test_a_batch_that_cannot_be_placed_leaves_nothing_behind() -> None:
    e = Engine(hosts=hosts(2), policies=[Policy(name="p", kind="vm-exclusive", vm_group="g")])
    e.place(vm("before"))
    free_before = [e.free(h) for h in ("h0", "h1")]
    batch = [vm("a", group="g"), vm("b"), vm("c", group="g"), vm("d", group="g"), vm("e")]
    with pytest.raises(ResourceExhausted) as err:
        e.place_many(batch)
    assert err.value.reason == "NO_VALID_HOST"
    assert err.value.message.startswith("none of the 5 VMs was placed: VM 'd' (4 of 5) could not be: ")
    assert set(err.value.metadata) == {"h0", "h1"}
    assert set(e.placements) == {"before"}
    assert [e.free(h) for h in ("h0", "h1")] == free_before
    assert e.group_hosts("g") == {}


def test_a_batch_naming_a_vm_twice_is_refused_before_placing() -> None:
    e = Engine(hosts=hosts(1))
    with pytest.raises(InvalidArgument) as err:
        e.place_many([vm("a"), vm("b"), vm("a")])
    assert err.value.field == "vms[2].name"
    assert not e.placements


def test_a_vm_is_placed_once_and_released_once() -> None:
    e = Engine(hosts=hosts(2))
    e.place(vm("a"))
    with pytest.raises(AlreadyExists):
        e.place(vm("a"))
    e.release("a")
    with pytest.raises(NotFound):
        e.release("a")
    with pytest.raises(NotFound):
        e.free("nowhere")


def test_bad_engine_inputs_name_their_field() -> None:
    p = Policy(name="p", kind="vm-exclusive", vm_group="g")
    cases: list[tuple[dict[str, object], str]] = [
        ({"hosts": hosts(1) + hosts(1)}, "hosts"),
        ({"hosts": hosts(1), "policies": [p, p]}, "policies"),
        ({"hosts": hosts(1), "strategy": "random"}, "strategy"),
    ]
    for kw, field in cases:
        with pytest.raises(InvalidArgument) as err:
            Engine(**kw)  # type: ignore[arg-type]
        assert err.value.field == field


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_incremental_index_always_equals_a_full_recount(seed: int) -> None:
    rng = random.Random(seed)
    groups = ["", "", "", "ex", "agg", "aff", "excl", "loose"]
    policies = [
        Policy(name="1", kind="vm-exclusive", vm_group="ex"),
        Policy(name="2", kind="vm-aggregate", vm_group="agg", mode="preferred"),
        Policy(name="3", kind="host-affinity", vm_group="aff", host_group=frozenset({"h1", "h2"})),
        Policy(
            name="4", kind="host-exclusion", vm_group="excl", host_group=frozenset({"h0"}), mode="preferred"
        ),
    ]
    the_hosts = hosts(12, memory_mib=16384)
    e = Engine(hosts=the_hosts, policies=policies, overcommit=Overcommit(cpu=2.0))
    live: set[str] = set()
    placed = refused = 0
    for step in range(1500):
        if live and rng.random() < 0.35:
            gone = rng.choice(sorted(live))
            e.release(gone)
            live.remove(gone)
            continue
        demand = VmDemand(
            name=f"v{step}",
            vcpus=rng.randint(1, 4),
            memory_mib=rng.choice((512, 1024, 4096)),
            group=rng.choice(groups),
        )
        try:
            e.place(demand)
        except ResourceExhausted:
            refused += 1
        else:
            live.add(demand.name)
            placed += 1

        if step % 50 == 0 or step == 1499:
            recount: dict[str, dict[str, int]] = {}
            used = {h.name: [0, 0] for h in the_hosts}
            for p in e.placements.values():
                if p.group:
                    counts = recount.setdefault(p.group, {})
                    counts[p.host] = counts.get(p.host, 0) + 1
                used[p.host][0] += p.vcpus
                used[p.host][1] += p.memory_mib
            for g in groups:
                assert dict(e.group_hosts(g)) == recount.get(g, {})
            for h in the_hosts:
                assert e.free(h.name) == (8 - used[h.name][0], 16384 - used[h.name][1])
                assert min(e.free(h.name)) >= 0
            # The mandatory rules held throughout.
            assert all(n == 1 for n in recount.get("ex", {}).values())
            assert set(recount.get("aff", {})) <= {"h1", "h2"}
    assert set(e.placements) == live
    assert placed > 500
    assert refused > 0  # the run reached full hosts, so refusals were exercised too
