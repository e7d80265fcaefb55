"""The typed boundary of the compiler: what one host enforces (its NICs, the groups
they use, the members of the groups rules point at) and what comes out (the
nftables ruleset and what each named counter counts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.nftobjects import Canonical, Ruleset, full_transaction
from zsd.network.secgroups.rules import Action, Direction


@dataclass(frozen=True, kw_only=True)
class HostNic:
    """A VM NIC on this host, as the firewall sees it."""

    port: str
    """The tap (or veth) interface on the port group's bridge; at most 15 characters."""
    mac: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    """The addresses the NIC may send from (anti-spoofing) and that make it a member
    of its groups. IPv6 link-local addresses are always allowed as sources."""
    groups: tuple[str, ...] = ()
    """Security groups in evaluation order (first associated first)."""
    ingress_default: Action = Action.DENY
    """What happens to traffic towards the NIC that no group rule matches."""
    egress_default: Action = Action.ALLOW
    """What happens to traffic from the NIC that no group rule matches."""
    bridge: str = ""
    """The port group's bridge the port is on; its connections are tracked in that
    bridge's conntrack zone (:mod:`zones`). Empty: the host's default zone 0, shared
    with everything else (only for callers that know no port groups)."""

    def default(self, direction: Direction) -> Action:
        return self.ingress_default if direction == Direction.INGRESS else self.egress_default


@dataclass(frozen=True, kw_only=True)
class GroupMembers:
    """Addresses of every NIC in the cluster that is in a group."""

    ipv4: frozenset[str] = frozenset()
    ipv6: frozenset[str] = frozenset()


class MemberNic(Protocol):
    """Any NIC record with its groups and addresses (a HostNic qualifies)."""

    @property
    def groups(self) -> tuple[str, ...]: ...
    @property
    def ipv4(self) -> tuple[str, ...]: ...
    @property
    def ipv6(self) -> tuple[str, ...]: ...


def membership(nics: Iterable[MemberNic]) -> dict[str, GroupMembers]:
    """Group -> members, from every NIC of the cluster."""
    v4: dict[str, set[str]] = {}
    v6: dict[str, set[str]] = {}
    for nic in nics:
        for g in nic.groups:
            v4.setdefault(g, set()).update(nic.ipv4)
            v6.setdefault(g, set()).update(nic.ipv6)
    return {g: GroupMembers(ipv4=frozenset(v4[g]), ipv6=frozenset(v6[g])) for g in v4}


@dataclass(frozen=True, kw_only=True)
class HostFirewall:
    """Everything one host's ruleset is compiled from."""

    nics: tuple[HostNic, ...]
    groups: Mapping[str, SecurityGroup]
    """At least every group a NIC here uses; others are ignored."""
    members: Mapping[str, GroupMembers] = field(default_factory=dict)
    """Members of the groups that rules (and built-in rules) point at; a missing
    group has no members."""


@dataclass(frozen=True, kw_only=True)
class RuleRef:
    """A numbered rule of a group (counted over every NIC using the group)."""

    group: str
    priority: int
    direction: Direction


@dataclass(frozen=True, kw_only=True)
class MembersRuleRef:
    """A group's built-in "allow traffic between members" rule, per direction."""

    group: str
    direction: Direction


@dataclass(frozen=True, kw_only=True)
class DefaultRef:
    """A NIC's default policy: traffic no rule of its groups matched."""

    port: str
    direction: Direction


CounterRef = RuleRef | MembersRuleRef | DefaultRef


@dataclass(frozen=True, kw_only=True)
class CounterIndex:
    """What the counting set elements of one part of the ruleset (a group, the NIC
    defaults) count. A counter id names a rule's counter whatever its priority."""

    elements: Mapping[tuple[str, Canonical], str]
    """(set name, element key) -> counter id."""
    refs: Mapping[str, CounterRef]
    """Counter id -> what it counts (several ids may count for one reference)."""


@dataclass(frozen=True, kw_only=True)
class CompiledRuleset:
    ruleset: Ruleset
    marks: Mapping[str, int]
    """Port -> its index in packet marks; kept stable from one compile to the next."""
    counter_index: tuple[CounterIndex, ...]
    zones: Mapping[str, int] = field(default_factory=dict)
    """Bridge -> its conntrack zone; kept stable from one compile to the next."""
    pickup: Mapping[int, float] = field(default_factory=dict)
    """Mark -> the (monotonic) time its NIC's pickup window ends (:mod:`pickup`):
    the elements of the ``pickup`` set, which the applier adds outside the diff."""

    def to_nft_json(self) -> dict[str, Any]:
        """The whole ruleset as one libnftables JSON transaction (for
        ``nftables.Nftables().json_cmd``): zsd's tables deleted and recreated."""
        return {"nftables": full_transaction(self.ruleset)}

    @cached_property
    def counters(self) -> dict[str, CounterRef]:
        """Counter id -> what it counts, for the whole ruleset."""
        return {i: ref for part in self.counter_index for i, ref in part.refs.items()}

    @cached_property
    def counter_elements(self) -> dict[tuple[str, Canonical], str]:
        """(set name, element key) -> counter id, for the whole ruleset."""
        return {k: i for part in self.counter_index for k, i in part.elements.items()}


@dataclass(frozen=True, kw_only=True)
class HitCount:
    ref: CounterRef
    packets: int
    bytes: int
