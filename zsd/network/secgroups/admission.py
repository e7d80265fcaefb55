"""Would a host's firewall admit a connection as new? The policy of
:class:`HostFirewall` evaluated in Python, without nftables, for conntrack entries
(:mod:`revocation` deletes those it no longer admits).

It follows the compiled NIC chains (:mod:`compiler`) for the first packet of a
connection: egress guard, implicit rules, the NIC's groups in order (first
matching rule of a group decides; then the group's built-in members rule; no
match: the next group), then the NIC's default. A connection between two NICs of
this host must pass the sender's egress and the receiver's ingress.

A connection belongs to a NIC when it is in the NIC's port-group zone and one of
its ends is one of the NIC's addresses (anti-spoofing makes a NIC send from
nothing else; zones keep equal addresses of two port groups apart). Connections
from IPv6 link-local addresses name no NIC and are never judged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from zsd.network.secgroups.groupchains import PROTO_NUMBERS
from zsd.network.secgroups.hostmodel import GroupMembers, HostFirewall, HostNic
from zsd.network.secgroups.rules import Action, Direction, EtherType, Protocol, RuleSpec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
_ND_IN = frozenset({134, 135, 136, 130})  # router advert, neighbour solicit/advert, MLD query
_ND_OUT = frozenset({133, 135, 136, 131, 132, 143})  # router/neighbour solicit, advert, MLD reports
_GUARDED = frozenset({134, 137})  # a VM is not the router: router advert, redirect


@dataclass(frozen=True, kw_only=True)
class Flow:
    """A tracked connection: its zone and its original direction (first packet)."""

    zone: int
    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    icmp_id: int = 0
    """Part of an ICMP echo connection's identity (needed to delete it)."""

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src).version


@dataclass(frozen=True, kw_only=True)
class Check:
    """One NIC check a flow goes through: ``direction`` on ``nic``."""

    nic: HostNic
    direction: Direction


class Admission:
    """The policy of one :class:`HostFirewall` with its bridges' zones (bridge ->
    zone; a NIC with no bridge is in zone 0). Decisions are cached: build one per
    firewall."""

    def __init__(self, firewall: HostFirewall, zones: Mapping[str, int]) -> None:
        self._firewall = firewall
        self._by_address: dict[tuple[int, Address], HostNic] = {}
        for nic in firewall.nics:
            zone = zones.get(nic.bridge, 0) if nic.bridge else 0
            for a in (*nic.ipv4, *nic.ipv6):
                self._by_address[(zone, ipaddress.ip_address(a))] = nic
        self._members: dict[str, frozenset[Address]] = {}
        self._decided: dict[tuple[object, ...], bool] = {}

    def checks(self, flow: Flow) -> tuple[Check, ...]:
        """The NIC checks the flow's first packet went through here (none: not a
        flow of a zsd NIC)."""
        out = []
        sender = self._by_address.get((flow.zone, ipaddress.ip_address(flow.src)))
        if sender is not None:
            out.append(Check(nic=sender, direction=Direction.EGRESS))
        receiver = self._by_address.get((flow.zone, ipaddress.ip_address(flow.dst)))
        if receiver is not None:
            out.append(Check(nic=receiver, direction=Direction.INGRESS))
        return tuple(out)

    def admits(self, flow: Flow) -> bool:
        """Whether every check of the flow accepts it as a new connection (True for a
        flow no zsd NIC has a check for)."""
        return all(self.passes(c, flow) for c in self.checks(flow))

    def passes(self, check: Check, flow: Flow) -> bool:
        remote = flow.dst if check.direction == Direction.EGRESS else flow.src
        key = (
            check.nic.port,
            check.direction,
            remote,
            flow.proto,
            flow.sport,
            flow.dport,
            flow.icmp_type,
            flow.icmp_code,
        )
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decide(check, flow, ipaddress.ip_address(remote))
            self._decided[key] = decided
        return decided

    def _decide(self, check: Check, flow: Flow, remote: Address) -> bool:
        implicit = _implicit(check.direction, flow)
        if implicit is not None:
            return implicit
        for name in check.nic.groups:
            group = self._firewall.groups[name]
            for rule in group.rules:
                if rule.spec.direction == check.direction and self._covers(rule.spec, flow, remote):
                    return rule.spec.action == Action.ALLOW
            if group.allow_members and remote in self._members_of(name):
                return True
        return check.nic.default(check.direction) == Action.ALLOW

    def _covers(self, spec: RuleSpec, flow: Flow, remote: Address) -> bool:
        if (spec.ethertype == EtherType.IPV4) != (remote.version == 4):
            return False
        if spec.remote_group is not None and remote not in self._members_of(spec.remote_group):
            return False
        if spec.remote_cidr is not None and remote not in ipaddress.ip_network(spec.remote_cidr):
            return False
        if spec.protocol != Protocol.ANY and PROTO_NUMBERS[spec.protocol] != flow.proto:
            return False
        if spec.port_range is not None and not spec.port_range.first <= flow.dport <= spec.port_range.last:
            return False
        if spec.icmp is None:
            return True
        return spec.icmp.type == flow.icmp_type and spec.icmp.code in (None, flow.icmp_code)

    def _members_of(self, group: str) -> frozenset[Address]:
        found = self._members.get(group)
        if found is None:
            m = self._firewall.members.get(group, GroupMembers())
            found = frozenset(ipaddress.ip_address(a) for a in (*m.ipv4, *m.ipv6))
            self._members[group] = found
        return found


def _implicit(direction: Direction, flow: Flow) -> bool | None:
    """The compiler's guard and implicit rules: a verdict, or None (the groups decide)."""
    v4 = flow.family == 4
    udp = (flow.sport, flow.dport) if flow.proto == UDP else None
    if direction == Direction.EGRESS:
        if flow.proto == ICMPV6 and not v4 and flow.icmp_type in _GUARDED:
            return False
        if udp == ((67, 68) if v4 else (547, 546)):
            return False  # a VM is not the DHCP server
        if flow.proto == ICMPV6 and not v4 and flow.icmp_type in _ND_OUT:
            return True
        if udp == ((68, 67) if v4 else (546, 547)):
            return True
        return None
    if flow.proto == ICMPV6 and not v4 and flow.icmp_type in _ND_IN:
        return True
    if udp == ((67, 68) if v4 else (547, 546)):
        return True
    return None
