"""The four scheduling policies on placement: mandatory ones filter hosts (and the
VM is refused, saying why, when nothing is left); preferred ones win over the
strategy's weight while they can and fall back when they cannot."""

from __future__ import annotations

import pytest

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Strategy, VmDemand
from zsd.compute.placement.policies import Policy
from zsd.errors import ResourceExhausted

NAMES = ("h1", "h2", "h3", "h4")


def hosts(**used_memory: int) -> list[HostState]:
    return [
        HostState(
            name=n,
            alive=True,
            lease_live=True,
            cpus=8,
            memory_mib=8192,
            used_memory_mib=used_memory.get(n, 0),
        )
        for n in NAMES
    ]


def vm(name: str, group: str = "g", memory_mib: int = 2048) -> VmDemand:
    return VmDemand(name=name, vcpus=1, memory_mib=memory_mib, group=group)


def engine(
    kind: str,
    mode: str,
    *,
    host_group: frozenset[str] = frozenset(),
    strategy: Strategy = "spread",
    **used_memory: int,
) -> Engine:
    policy = Policy(name="p", kind=kind, vm_group="g", host_group=host_group, mode=mode)
    return Engine(hosts=hosts(**used_memory), policies=[policy], strategy=strategy)


# vm-exclusive


def test_mandatory_exclusive_puts_each_vm_on_its_own_host_even_when_packing() -> None:
    e = engine("vm-exclusive", "mandatory", strategy="pack")
    placed = [e.place(vm(f"v{i}")).host for i in range(4)]
    assert sorted(placed) == list(NAMES)
    assert e.place(vm("other", group="")).host == "h1"  # ungrouped VMs are not bound
    with pytest.raises(ResourceExhausted) as err:
        e.place(vm("v4"))
    assert dict(err.value.metadata) == dict.fromkeys(
        NAMES, "policy 'p' (vm-exclusive, mandatory): already runs a VM of group 'g'"
    )


def test_preferred_exclusive_spreads_first_then_shares_a_host() -> None:
    e = engine("vm-exclusive", "preferred", strategy="pack")
    placed = [e.place(vm(f"v{i}")).host for i in range(4)]
    assert sorted(placed) == list(NAMES)
    fifth = e.place(vm("v4"))
    assert fifth.host in NAMES
    assert not fifth.rejected
    # A sixth avoids the host that now runs two members.
    assert e.place(vm("v5")).host != fifth.host


# vm-aggregate


def test_mandatory_aggregate_keeps_the_group_on_the_first_members_host() -> None:
    e = engine("vm-aggregate", "mandatory", h1=4096)
    first = e.place(vm("v0", memory_mib=1024)).host
    assert first == "h2"  # spread picks an empty host for the first
    assert e.place(vm("v1", memory_mib=1024)).host == "h2"
    with pytest.raises(ResourceExhausted) as err:
        e.place(vm("v2", memory_mib=8192))
    reasons = err.value.metadata
    assert reasons["h2"] == "6144 MiB free of 8192 (needs 8192)"
    assert reasons["h3"] == "policy 'p' (vm-aggregate, mandatory): group 'g' runs on h2"
    assert set(reasons) == set(NAMES)


def test_preferred_aggregate_stacks_the_group_and_falls_back_when_full() -> None:
    e = engine("vm-aggregate", "preferred")
    placed = [e.place(vm(f"v{i}")).host for i in range(4)]
    assert placed == ["h1"] * 4  # spread alone would have used four hosts
    overflow = e.place(vm("v4"))
    assert overflow.host != "h1"
    assert overflow.rejected == {"h1": "0 MiB free of 8192 (needs 2048)"}
    assert e.group_hosts("g") == {"h1": 4, overflow.host: 1}


# host-affinity


def test_mandatory_affinity_uses_only_the_host_group() -> None:
    e = engine("host-affinity", "mandatory", host_group=frozenset({"h3", "h4"}), h3=4096, h4=4096)
    placed = sorted(e.place(vm(f"v{i}")).host for i in range(4))
    assert placed == ["h3", "h3", "h4", "h4"]
    with pytest.raises(ResourceExhausted) as err:
        e.place(vm("v4"))
    assert err.value.metadata["h1"] == "policy 'p' (host-affinity, mandatory): not in its host group"
    assert err.value.metadata["h3"] == "0 MiB free of 8192 (needs 2048)"


def test_preferred_affinity_beats_spread_then_falls_back() -> None:
    # h4 is the fullest host, so spread alone would never pick it first.
    e = engine("host-affinity", "preferred", host_group=frozenset({"h4"}), h4=4096)
    assert [e.place(vm(f"v{i}")).host for i in range(2)] == ["h4", "h4"]
    assert e.place(vm("v2")).host == "h1"


# host-exclusion


def test_mandatory_exclusion_never_uses_the_host_group() -> None:
    e = engine("host-exclusion", "mandatory", host_group=frozenset({"h1", "h2", "h3"}))
    assert {e.place(vm(f"v{i}")).host for i in range(4)} == {"h4"}
    with pytest.raises(ResourceExhausted) as err:
        e.place(vm("v4"))
    assert err.value.metadata["h2"] == "policy 'p' (host-exclusion, mandatory): in its host group"
    assert err.value.metadata["h4"] == "0 MiB free of 8192 (needs 2048)"


def test_preferred_exclusion_avoids_the_host_group_until_nothing_else_fits() -> None:
    # h4 is the emptiest host: spread alone would pick it.
    e = engine("host-exclusion", "preferred", host_group=frozenset({"h1", "h4"}), h2=4096, h3=4096)
    placed = [e.place(vm(f"v{i}")).host for i in range(4)]
    assert sorted(placed) == ["h2", "h2", "h3", "h3"]
    assert e.place(vm("v4")).host in {"h1", "h4"}


def test_a_group_without_a_policy_is_only_indexed() -> None:
    e = Engine(hosts=hosts(), strategy="pack")
    assert [e.place(vm(f"v{i}", group="free")).host for i in range(2)] == ["h1", "h1"]
    assert e.group_hosts("free") == {"h1": 2}
