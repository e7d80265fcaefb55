"""Scheduling policies at the API boundary and in the leader's choice: the stored
record, the request checks (each naming its field), the message with the group's VMs
and violations, and ``choose`` keeping the policies over the VMs already placed."""

from __future__ import annotations

import pytest

from tests.unit.compute.test_cluster_vms import demand, host
from zsd.api import schedulingconv
from zsd.cluster.store.model import Record
from zsd.compute.placement.policies import Policy
from zsd.compute.policyrecords import PolicyRecord, policies
from zsd.compute.records import VmRecord
from zsd.compute.scheduler import choose
from zsd.errors import Internal, InvalidArgument, ResourceExhausted
from zsd.v1 import scheduling_pb2

Msg = scheduling_pb2.SchedulingPolicy
UID = "6f1c1f0e-0c43-4b8e-9a54-1d7c4f7e2a10"


def placed(name: str, host_name: str, group: str = "web") -> VmRecord:
    return VmRecord(name=name, uid=UID, host=host_name, vcpus=1, memory_mib=512, group=group)


def test_a_policy_record_round_trips_and_a_damaged_one_is_an_internal_error() -> None:
    record = PolicyRecord(
        policy=Policy(
            name="db",
            kind="host-affinity",
            mode="preferred",
            vm_group="db",
            host_group=frozenset({"h2", "h1"}),
        ),
        description="databases on the fast hosts",
        create_time=1700000000.5,
    )
    assert PolicyRecord.decode(record.encode()) == record
    stored = Record(
        kind="vmpolicy",
        name="db",
        data=record.encode(),
        revision=3,
        epoch=1,
        create_revision=3,
        update_time=0,
    )
    assert policies([stored]) == [record.policy]
    with pytest.raises(Internal, match="damaged scheduling policy"):
        PolicyRecord.decode(b'{"name": "db"}')


def test_a_request_becomes_a_policy() -> None:
    record = schedulingconv.policy_record(
        "fast",
        Msg(
            kind=Msg.HOST_AFFINITY,
            mode=Msg.MANDATORY,
            vm_group="db",
            host_group=["hosts/h1", "hosts/h2"],
            description="d",
        ),
    )
    assert record.policy == Policy(
        name="fast", kind="host-affinity", mode="mandatory", vm_group="db", host_group=frozenset({"h1", "h2"})
    )
    assert record.description == "d"


@pytest.mark.parametrize(
    ("policy_id", "msg", "field", "says"),
    [
        (
            "Bad/Name",
            Msg(kind=Msg.VM_EXCLUSIVE, mode=Msg.MANDATORY, vm_group="g"),
            "policy_id",
            "not a valid name",
        ),
        ("p", Msg(mode=Msg.MANDATORY, vm_group="g"), "policy.kind", "VM_EXCLUSIVE, VM_AGGREGATE"),
        ("p", Msg(kind=Msg.VM_EXCLUSIVE, vm_group="g"), "policy.mode", "MANDATORY or PREFERRED"),
        (
            "p",
            Msg(kind=Msg.VM_EXCLUSIVE, mode=Msg.MANDATORY, vm_group="<x/>"),
            "policy.vm_group",
            "valid name",
        ),
        (
            "p",
            Msg(kind=Msg.HOST_AFFINITY, mode=Msg.MANDATORY, vm_group="g", host_group=["h1"]),
            "policy.host_group[0]",
            "not a host name",
        ),
        (
            "p",
            Msg(kind=Msg.HOST_AFFINITY, mode=Msg.MANDATORY, vm_group="g", host_group=["hosts/a", "hosts/a"]),
            "policy.host_group[1]",
            "listed twice",
        ),
        (
            "p",
            Msg(kind=Msg.HOST_AFFINITY, mode=Msg.MANDATORY, vm_group="g", host_group=["hosts/-"]),
            "policy.host_group[0]",
            "name the host",
        ),
        (
            "p",
            Msg(name="schedulingPolicies/q", kind=Msg.VM_EXCLUSIVE, mode=Msg.MANDATORY, vm_group="g"),
            "policy.name",
            "disagrees",
        ),
        (
            "p",
            Msg(kind=Msg.VM_EXCLUSIVE, mode=Msg.MANDATORY, vm_group="g", description="x" * 1025),
            "policy.description",
            "1024",
        ),
    ],
)
def test_bad_requests_name_the_field(policy_id: str, msg: Msg, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says) as bad:
        schedulingconv.policy_record(policy_id, msg)
    assert bad.value.field == field


def test_policy_names() -> None:
    assert schedulingconv.policy_id("schedulingPolicies/web") == "web"
    for wrong in ("web", "policies/web", "schedulingPolicies/", "schedulingPolicies/a/b"):
        with pytest.raises(InvalidArgument, match="schedulingPolicies/") as bad:
            schedulingconv.policy_id(wrong)
        assert bad.value.field == "name"


def test_the_message_lists_the_groups_vms_and_its_violations() -> None:
    record = PolicyRecord(
        policy=Policy(name="spread", kind="vm-exclusive", mode="preferred", vm_group="web"),
        create_time=10.0,
    )
    vms = [placed("a", "h1"), placed("b", "h1"), placed("c", "h2"), placed("other", "h1", group="db")]
    msg = schedulingconv.policy_message(record, vms)
    assert msg.name == "schedulingPolicies/spread"
    assert (msg.kind, msg.mode, msg.vm_group) == (Msg.VM_EXCLUSIVE, Msg.PREFERRED, "web")
    assert list(msg.vms) == ["vms/a", "vms/b", "vms/c"]
    assert dict(msg.violations) == {"vms/a": "shares h1 with b", "vms/b": "shares h1 with a"}
    assert msg.create_time.seconds == 10


def test_choose_keeps_a_mandatory_exclusive_policy_over_placed_vms() -> None:
    spread = Policy(name="spread", kind="vm-exclusive", vm_group="web")
    records = [placed("a", "h1"), placed("b", "h2")]
    hosts = [
        host("h1", used_cpu=1, used_mem=512),
        host("h2", used_cpu=1, used_mem=512),
        host("h3", used_mem=8000),
    ]
    # h3 has the least free memory: without the policy spread would not pick it.
    assert choose(demand(group="web"), hosts, records) != "h3"
    assert choose(demand(group="web"), hosts, records, policies=[spread]) == "h3"
    with pytest.raises(ResourceExhausted, match="policy 'spread' \\(vm-exclusive, mandatory\\)") as refused:
        choose(demand(group="web"), hosts[:2], records, policies=[spread])
    assert set(refused.value.metadata) == {"h1", "h2"}


def test_choose_keeps_host_affinity_and_prefers_away_from_an_excluded_host() -> None:
    hosts = [host("h1"), host("h2", used_mem=8000), host("h3", used_mem=4000)]
    affinity = Policy(name="fast", kind="host-affinity", vm_group="db", host_group=frozenset({"h2", "h3"}))
    assert choose(demand(group="db"), hosts, policies=[affinity]) == "h3"
    avoid = Policy(
        name="avoid", kind="host-exclusion", mode="preferred", vm_group="db", host_group=frozenset({"h1"})
    )
    assert choose(demand(group="db"), hosts, policies=[avoid]) == "h3"
    # Preferred only: when the excluded host is the only one, the VM still goes there.
    assert choose(demand(group="db"), hosts[:1], policies=[avoid]) == "h1"
    # A pinned VM (migration to a named host) is refused when that host breaks a mandatory rule.
    with pytest.raises(ResourceExhausted, match="not in its host group"):
        choose(demand(group="db", pinned="h1"), hosts, policies=[affinity])
