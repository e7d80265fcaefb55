"""VM scheduling policies, ZStack style: a policy binds one VM scheduling group to a
rule about hosts, either mandatory (a filter: hosts breaking it are rejected) or
preferred (a weight: hosts keeping it win whenever one of them fits).

- vm-exclusive: the group's VMs run on different hosts;
- vm-aggregate: the group's VMs run on one host;
- host-affinity: the group's VMs run on hosts of ``host_group``;
- host-exclusion: the group's VMs never run on hosts of ``host_group``.

A group is bound to at most one policy. ``check_policy`` guards creating a policy and
``validate_membership`` guards a VM joining a group; ``rule`` and ``preference`` are what
the engine asks on every placement, so they only look at the group -> host -> count
index, never at all placements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from zsd.compute.placement.filters import static_reason
from zsd.compute.placement.model import HostState, Placement
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument

VM_EXCLUSIVE = "vm-exclusive"
VM_AGGREGATE = "vm-aggregate"
HOST_AFFINITY = "host-affinity"
HOST_EXCLUSION = "host-exclusion"
VM_KINDS = (VM_EXCLUSIVE, VM_AGGREGATE)
HOST_KINDS = (HOST_AFFINITY, HOST_EXCLUSION)
KINDS = VM_KINDS + HOST_KINDS
MANDATORY = "mandatory"
PREFERRED = "preferred"
MODES = (MANDATORY, PREFERRED)


@dataclass(frozen=True, kw_only=True)
class Policy:
    name: str
    kind: str
    """One of ``KINDS``; a plain string because it arrives from the API unchecked."""
    vm_group: str
    host_group: frozenset[str] = frozenset()
    """Host names; only for the host kinds."""
    mode: str = MANDATORY

    @property
    def mandatory(self) -> bool:
        return self.mode == MANDATORY

    def describe(self) -> str:
        return f"policy '{self.name}' ({self.kind}, {self.mode})"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What a mandatory policy allows for the next VM of its group."""

    allowed: Set[str] | None = None
    """Only these hosts pass; None: no such restriction."""
    denied: Set[str] = frozenset()
    reason: str
    """Why a host outside ``allowed`` or inside ``denied`` is rejected."""


def rule(policy: Policy, members_by_host: Mapping[str, int]) -> Rule | None:
    """The filter a mandatory policy imposes now; None for a preferred policy, or when
    nothing is restricted yet (an aggregate group with no VM placed)."""
    if not policy.mandatory:
        return None
    if policy.kind == VM_EXCLUSIVE:
        return Rule(
            denied=members_by_host.keys(),
            reason=f"{policy.describe()}: already runs a VM of group '{policy.vm_group}'",
        )
    if policy.kind == VM_AGGREGATE:
        if not members_by_host:
            return None
        where = ", ".join(sorted(members_by_host))
        return Rule(
            allowed=members_by_host.keys(),
            reason=f"{policy.describe()}: group '{policy.vm_group}' runs on {where}",
        )
    if policy.kind == HOST_AFFINITY:
        return Rule(allowed=policy.host_group, reason=f"{policy.describe()}: not in its host group")
    return Rule(denied=policy.host_group, reason=f"{policy.describe()}: in its host group")


def preference(policy: Policy, members_by_host: Mapping[str, int]) -> Mapping[str, int]:
    """Bonus (> 0) or penalty (< 0) per host for a preferred policy; hosts absent weigh 0.
    It dominates the strategy's weight: a host with a higher bonus always wins."""
    if policy.mandatory:
        return {}
    if policy.kind == VM_EXCLUSIVE:
        # The fewer members a host already runs, the less the group is crowded there.
        return {h: -n for h, n in members_by_host.items()}
    if policy.kind == VM_AGGREGATE:
        return dict(members_by_host)
    return dict.fromkeys(policy.host_group, 1 if policy.kind == HOST_AFFINITY else -1)


def validate_policy(policy: Policy, hosts: Iterable[str]) -> Policy:
    """The policy on its own, whatever the cluster state: InvalidArgument naming the field."""
    if not policy.name:
        raise InvalidArgument("a policy needs a name", field="policy.name")
    if policy.kind not in KINDS:
        raise InvalidArgument(f"unknown kind {policy.kind!r}; one of {', '.join(KINDS)}", field="policy.kind")
    if policy.mode not in MODES:
        raise InvalidArgument(f"unknown mode {policy.mode!r}; one of {', '.join(MODES)}", field="policy.mode")
    if not policy.vm_group:
        raise InvalidArgument("a policy binds a VM scheduling group", field="policy.vm_group")
    if policy.kind in VM_KINDS and policy.host_group:
        raise InvalidArgument(f"a {policy.kind} policy takes no host group", field="policy.host_group")
    if policy.kind in HOST_KINDS:
        if not policy.host_group:
            raise InvalidArgument(f"a {policy.kind} policy needs a host group", field="policy.host_group")
        unknown = policy.host_group - set(hosts)
        if unknown:
            raise InvalidArgument(f"unknown host(s) {', '.join(sorted(unknown))}", field="policy.host_group")
    return policy


def violations(policy: Policy, members: Mapping[str, str]) -> dict[str, str]:
    """Members (VM -> host) placed against ``policy`` as if it were mandatory, each with
    why; empty when the group's placement keeps the rule."""
    if policy.kind in (VM_EXCLUSIVE, VM_AGGREGATE):
        by_host: dict[str, list[str]] = {}
        for vm, host in members.items():
            by_host.setdefault(host, []).append(vm)
        if policy.kind == VM_EXCLUSIVE:
            return {
                vm: f"shares {host} with {', '.join(sorted(set(vms) - {vm}))}"
                for host, vms in by_host.items()
                if len(vms) > 1
                for vm in vms
            }
        if len(by_host) < 2:
            return {}
        return {vm: f"on {host}, apart from the rest" for vm, host in members.items()}
    inside = policy.kind == HOST_EXCLUSION
    return {
        vm: f"on {host}, {'inside' if inside else 'outside'} the host group"
        for vm, host in members.items()
        if (host in policy.host_group) == inside
    }


def _members(group: str, placements: Mapping[str, Placement]) -> dict[str, str]:
    return {vm: p.host for vm, p in placements.items() if p.group == group}


def _usable(hosts: Sequence[HostState]) -> list[str]:
    return [h.name for h in hosts if not static_reason(h)]


def _conflict(policy: Policy, bad: Mapping[str, str], what: str) -> FailedPrecondition:
    detail = "; ".join(f"{vm} {why}" for vm, why in sorted(bad.items()))
    return FailedPrecondition(
        f"{policy.describe()} {what}: {detail}", reason="POLICY_CONFLICT", metadata=dict(bad)
    )


def _check_feasible(policy: Policy, count: int, hosts: Sequence[HostState], what: str) -> None:
    if policy.kind != VM_EXCLUSIVE or not policy.mandatory:
        return
    usable = _usable(hosts)
    if count > len(usable):
        raise FailedPrecondition(
            f"{policy.describe()} {what}: group '{policy.vm_group}' would have {count} VMs "
            f"but only {len(usable)} host(s) can run VMs",
            reason="POLICY_INFEASIBLE",
            metadata={"members": str(count), "hosts": str(len(usable))},
        )


def check_policy(
    new_policy: Policy,
    existing_policies: Iterable[Policy],
    placements: Mapping[str, Placement],
    hosts: Sequence[HostState],
) -> Policy:
    """May ``new_policy`` be created now? InvalidArgument for a malformed policy,
    AlreadyExists for a taken name, FailedPrecondition POLICY_CONFLICT when its group
    already has a policy or (mandatory) the group's VMs already break it, and
    POLICY_INFEASIBLE when a mandatory vm-exclusive group outnumbers the usable hosts."""
    validate_policy(new_policy, (h.name for h in hosts))
    for old in existing_policies:
        if old.name == new_policy.name:
            raise AlreadyExists(
                f"policy '{new_policy.name}' already exists", field="policy.name", reason="POLICY_EXISTS"
            )
        if old.vm_group == new_policy.vm_group:
            raise FailedPrecondition(
                f"group '{new_policy.vm_group}' is already bound to {old.describe()}",
                field="policy.vm_group",
                reason="POLICY_CONFLICT",
            )
    members = _members(new_policy.vm_group, placements)
    if new_policy.mandatory:
        bad = violations(new_policy, members)
        if bad:
            raise _conflict(new_policy, bad, "contradicts where the group's VMs run now")
    _check_feasible(new_policy, len(members), hosts, "cannot hold")
    return new_policy


def validate_membership(
    vm: str,
    group: str,
    *,
    policies: Iterable[Policy],
    placements: Mapping[str, Placement],
    hosts: Sequence[HostState],
) -> None:
    """May ``vm`` join ``group``? ``vm`` may be placed already (its host must then keep
    the group's mandatory policy) or about to be created (only feasibility counts; the
    placement itself keeps the rule)."""
    policy = next((p for p in policies if p.vm_group == group), None)
    if policy is None:
        return
    members = _members(group, placements)
    members.pop(vm, None)
    placed = placements.get(vm)
    if placed is not None:
        members[vm] = placed.host
        if policy.mandatory:
            bad = violations(policy, members)
            if vm in bad:
                raise _conflict(policy, bad, f"does not allow VM '{vm}' in group '{group}'")
    _check_feasible(policy, len(members) + (placed is None), hosts, f"cannot take VM '{vm}'")
