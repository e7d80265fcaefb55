"""SchedulingService messages <-> scheduling policies (``zsd.compute.placement.policies``),
with errors that name the request field."""

from __future__ import annotations

from collections.abc import Sequence

from zsd.api.convert import timestamp
from zsd.api.names import host_id
from zsd.compute.placement import policies as pol
from zsd.compute.placement.policies import Policy, violations
from zsd.compute.policyrecords import PolicyRecord
from zsd.compute.records import VmRecord
from zsd.errors import InvalidArgument
from zsd.storage import validate
from zsd.v1 import scheduling_pb2

PREFIX = "schedulingPolicies/"
_Msg = scheduling_pb2.SchedulingPolicy
_KINDS = {
    _Msg.VM_EXCLUSIVE: pol.VM_EXCLUSIVE,
    _Msg.VM_AGGREGATE: pol.VM_AGGREGATE,
    _Msg.HOST_AFFINITY: pol.HOST_AFFINITY,
    _Msg.HOST_EXCLUSION: pol.HOST_EXCLUSION,
}
_MODES = {_Msg.MANDATORY: pol.MANDATORY, _Msg.PREFERRED: pol.PREFERRED}
MAX_DESCRIPTION = 1024


def policy_id(name: str, *, field: str = "name") -> str:
    """The {policy} of "schedulingPolicies/{policy}"."""
    prefix, _, rest = name.partition("/")
    if prefix + "/" != PREFIX or not rest or "/" in rest:
        raise InvalidArgument(
            f"{name!r} is not a scheduling policy name; expected 'schedulingPolicies/{{policy}}'",
            field=field,
            reason="INVALID_NAME",
        )
    return validate.name(rest, field=field)


def policy_record(policy_id_: str, msg: scheduling_pb2.SchedulingPolicy) -> PolicyRecord:
    """A new policy from CreateSchedulingPolicyRequest (whether it fits the cluster is
    ``check_policy``'s on the leader)."""
    name = validate.name(policy_id_, field="policy_id")
    if msg.name and msg.name != PREFIX + name:
        raise InvalidArgument(
            f"policy.name {msg.name!r} disagrees with policy_id {name!r}; leave it empty", field="policy.name"
        )
    if msg.kind not in _KINDS:
        raise InvalidArgument(
            "required: VM_EXCLUSIVE, VM_AGGREGATE, HOST_AFFINITY or HOST_EXCLUSION", field="policy.kind"
        )
    if msg.mode not in _MODES:
        raise InvalidArgument("required: MANDATORY or PREFERRED", field="policy.mode")
    if len(msg.description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"at most {MAX_DESCRIPTION} characters", field="policy.description")
    hosts = [host_id(h, field=f"policy.host_group[{i}]") for i, h in enumerate(msg.host_group)]
    for i, h in enumerate(hosts):
        if h == "-":
            raise InvalidArgument(
                "name the host; 'hosts/-' is not allowed here", field=f"policy.host_group[{i}]"
            )
        if h in hosts[:i]:
            raise InvalidArgument(f"hosts/{h} is listed twice", field=f"policy.host_group[{i}]")
    policy = Policy(
        name=name,
        kind=_KINDS[msg.kind],
        mode=_MODES[msg.mode],
        vm_group=validate.name(msg.vm_group, field="policy.vm_group") if msg.vm_group else "",
        host_group=frozenset(hosts),
    )
    return PolicyRecord(policy=policy, description=msg.description)


def policy_message(record: PolicyRecord, vms: Sequence[VmRecord]) -> scheduling_pb2.SchedulingPolicy:
    """``vms``: every VM record (the group's members are picked here)."""
    p = record.policy
    members = {vm.name: vm.host for vm in vms if vm.group == p.vm_group}
    return scheduling_pb2.SchedulingPolicy(
        name=PREFIX + p.name,
        kind=next(k for k, v in _KINDS.items() if v == p.kind),
        mode=next(k for k, v in _MODES.items() if v == p.mode),
        vm_group=p.vm_group,
        host_group=[f"hosts/{h}" for h in sorted(p.host_group)],
        description=record.description,
        create_time=timestamp(record.create_time),
        vms=[f"vms/{vm}" for vm in sorted(members)],
        violations={f"vms/{vm}": why for vm, why in violations(p, members).items()},
    )
