"""Creating a policy and joining a group: malformed input names its field; a group
takes one policy; a mandatory policy the current placements already break is a
conflict naming the VMs; a mandatory vm-exclusive group larger than the usable hosts
is infeasible."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zsd.compute.placement.model import HostState, Placement
from zsd.compute.placement.policies import Policy, check_policy, validate_membership
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument

HOSTS = [
    HostState(name="h1", alive=True, lease_live=True, cpus=8, memory_mib=8192),
    HostState(name="h2", alive=True, lease_live=True, cpus=8, memory_mib=8192),
    HostState(name="h3", alive=False, lease_live=True, cpus=8, memory_mib=8192),
    HostState(name="h4", alive=True, lease_live=True, maintenance=True, cpus=8, memory_mib=8192),
]


def at(host: str, group: str = "g") -> Placement:
    return Placement(host=host, group=group, vcpus=1, memory_mib=512)


EXCLUSIVE = Policy(name="p", kind="vm-exclusive", vm_group="g")
AFFINITY = Policy(name="p", kind="host-affinity", vm_group="g", host_group=frozenset({"h1"}))


@pytest.mark.parametrize(
    ("policy", "field", "text"),
    [
        (replace(EXCLUSIVE, name=""), "policy.name", "needs a name"),
        (replace(EXCLUSIVE, kind="anti-affinity"), "policy.kind", "unknown kind 'anti-affinity'"),
        (replace(EXCLUSIVE, mode="required"), "policy.mode", "unknown mode 'required'"),
        (replace(EXCLUSIVE, vm_group=""), "policy.vm_group", "binds a VM scheduling group"),
        (replace(EXCLUSIVE, host_group=frozenset({"h1"})), "policy.host_group", "takes no host group"),
        (replace(AFFINITY, host_group=frozenset()), "policy.host_group", "needs a host group"),
        (
            replace(AFFINITY, host_group=frozenset({"h1", "h9", "h8"})),
            "policy.host_group",
            "unknown host(s) h8, h9",
        ),
    ],
)
def test_a_malformed_policy_names_its_field(policy: Policy, field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_policy(policy, [], {}, HOSTS)
    assert err.value.field == field
    assert text in err.value.message


def test_a_good_policy_passes() -> None:
    placements = {"a": at("h1"), "b": at("h2"), "c": at("h1", group="other")}
    assert check_policy(EXCLUSIVE, [], placements, HOSTS) is EXCLUSIVE


def test_a_group_takes_one_policy_and_a_name_one_group() -> None:
    other = Policy(name="q", kind="vm-aggregate", vm_group="g", mode="preferred")
    with pytest.raises(FailedPrecondition) as err:
        check_policy(other, [EXCLUSIVE], {}, HOSTS)
    assert (err.value.reason, err.value.field) == ("POLICY_CONFLICT", "policy.vm_group")
    assert "already bound to policy 'p' (vm-exclusive, mandatory)" in err.value.message
    with pytest.raises(AlreadyExists) as exists:
        check_policy(replace(other, name="p", vm_group="g2"), [EXCLUSIVE], {}, HOSTS)
    assert exists.value.field == "policy.name"


@pytest.mark.parametrize(
    ("policy", "placements", "offending"),
    [
        (EXCLUSIVE, {"a": at("h1"), "b": at("h1"), "c": at("h2")}, {"a", "b"}),
        (Policy(name="p", kind="vm-aggregate", vm_group="g"), {"a": at("h1"), "b": at("h2")}, {"a", "b"}),
        (AFFINITY, {"a": at("h1"), "b": at("h2"), "x": at("h2", group="")}, {"b"}),
        (replace(AFFINITY, kind="host-exclusion"), {"a": at("h1"), "b": at("h2")}, {"a"}),
    ],
)
def test_a_mandatory_policy_the_placements_break_is_a_conflict_naming_the_vms(
    policy: Policy, placements: dict[str, Placement], offending: set[str]
) -> None:
    with pytest.raises(FailedPrecondition) as err:
        check_policy(policy, [], placements, HOSTS)
    assert err.value.reason == "POLICY_CONFLICT"
    assert set(err.value.metadata) == offending
    for vm in offending:
        assert f"{vm} on h" in err.value.message or f"{vm} shares h" in err.value.message
    # The same policy as a preference is only a wish: it may be created.
    assert check_policy(replace(policy, mode="preferred"), [], placements, HOSTS).mode == "preferred"


def test_a_mandatory_exclusive_group_larger_than_the_usable_hosts_is_infeasible() -> None:
    # h3 is dead and h4 in maintenance: two usable hosts for three VMs.
    placements = {"a": at("h1"), "b": at("h2"), "c": at("h3")}
    with pytest.raises(FailedPrecondition) as err:
        check_policy(EXCLUSIVE, [], placements, HOSTS)
    assert err.value.reason == "POLICY_INFEASIBLE"
    assert "would have 3 VMs but only 2 host(s)" in err.value.message
    check_policy(replace(EXCLUSIVE, mode="preferred"), [], placements, HOSTS)


def test_joining_a_group_keeps_its_mandatory_policy() -> None:
    placements = {"a": at("h1"), "b": at("h2", group=""), "c": at("h1", group="")}
    # b runs alone on h2: it may join; c shares h1 with a: it may not.
    validate_membership("b", "g", policies=[EXCLUSIVE], placements=placements, hosts=HOSTS)
    with pytest.raises(FailedPrecondition) as err:
        validate_membership("c", "g", policies=[EXCLUSIVE], placements=placements, hosts=HOSTS)
    assert err.value.reason == "POLICY_CONFLICT"
    assert "c shares h1 with a" in err.value.message
    with pytest.raises(FailedPrecondition, match="VM 'b'"):
        validate_membership("b", "g", policies=[AFFINITY], placements=placements, hosts=HOSTS)


def test_a_new_vm_may_not_outnumber_the_hosts_of_an_exclusive_group() -> None:
    placements = {"a": at("h1")}
    validate_membership("new", "g", policies=[EXCLUSIVE], placements=placements, hosts=HOSTS)
    placements["b"] = at("h2")
    with pytest.raises(FailedPrecondition) as err:
        validate_membership("new", "g", policies=[EXCLUSIVE], placements=placements, hosts=HOSTS)
    assert err.value.reason == "POLICY_INFEASIBLE"
    # A group without a policy takes anyone.
    validate_membership("new", "free", policies=[EXCLUSIVE], placements=placements, hosts=HOSTS)
