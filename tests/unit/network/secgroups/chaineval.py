"""A packet evaluator for compiled group chains (the subset of libnftables JSON the
compiler emits), and plain first-match evaluation of a group's rules, so tests
can check that packing changes nothing a packet can observe."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.groupchains import PROTO_NUMBERS, GroupParts, chain_name, member_set
from zsd.network.secgroups.hostmodel import MembersRuleRef, RuleRef
from zsd.network.secgroups.nftobjects import canonical
from zsd.network.secgroups.rules import Action, Direction, EtherType, Protocol, RuleSpec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class Packet:
    remote: str
    """The other end: the source of an ingress packet, the destination of an egress one."""
    proto: int
    dport: int = 0
    icmp_type: int = 0
    icmp_code: int = 0

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.remote).version


Outcome = tuple[str, str] | None
"""(verdict, counter) or None when the chain returns."""


def run_chain(
    parts: GroupParts, direction: Direction, packet: Packet, members: Mapping[str, Set[str]]
) -> Outcome:
    """What the compiled chain does to ``packet`` and which counter counts it;
    ``members`` maps member set names (``members_web_v4``) to addresses."""
    chain = next(c for c in parts.chains if c.name == chain_name(parts.group.name, direction))
    sets = {s.name: s for s in parts.sets}
    for rule in chain.rules:
        counter: str | None = None
        for stmt in rule:
            if "match" not in stmt:
                (verdict,) = stmt
                assert counter is not None, "a verdict without a counting lookup"
                return verdict, counter
            m = stmt["match"]
            assert m["op"] == "=="
            right = m["right"]
            if not str(right).startswith("@"):
                if _value(m["left"], packet) != right:
                    break
            elif right[1:] in members:
                if _value(m["left"], packet) not in {ipaddress.ip_address(a) for a in members[right[1:]]}:
                    break
            else:
                key = m["left"]
                values = (
                    [_value(k, packet) for k in key["concat"]] if "concat" in key else [_value(key, packet)]
                )
                lookup = sets[right[1:]]
                assert lookup.counters
                hits = [e for e in lookup.elements if _element_matches(e, values)]
                assert len(hits) <= 1, f"overlapping elements {hits}"
                if not hits:
                    break
                counter = parts.index.elements[(lookup.name, canonical(hits[0]))]
    return None


def first_match(
    group: SecurityGroup, parts: GroupParts, direction: Direction, packet: Packet, member_of: Set[str]
) -> Outcome:
    """Plain rule-by-rule evaluation; ``member_of``: the groups the remote end is in."""
    names = {ref.priority: n for n, ref in parts.index.refs.items() if isinstance(ref, RuleRef)}
    for rule in group.rules:
        if rule.spec.direction == direction and _covers(rule.spec, packet, member_of):
            return ("accept" if rule.spec.action == Action.ALLOW else "drop"), names[rule.priority]
    if group.allow_members and group.name in member_of:
        builtin = next(
            n
            for n, ref in parts.index.refs.items()
            if isinstance(ref, MembersRuleRef)
            and ref.direction == direction
            and n.endswith(f"_v{packet.family}")
        )
        return "accept", builtin
    return None


def member_sets(groups: Mapping[str, Set[str]]) -> dict[str, set[str]]:
    """Group -> addresses as the member set names the chains use."""
    out: dict[str, set[str]] = {}
    for g, addresses in groups.items():
        for family in (4, 6):
            out[member_set(g, family)] = {a for a in addresses if ipaddress.ip_address(a).version == family}
    return out


def _covers(spec: RuleSpec, p: Packet, member_of: Set[str]) -> bool:
    if (spec.ethertype == EtherType.IPV4) != (p.family == 4):
        return False
    if spec.remote_group is not None and spec.remote_group not in member_of:
        return False
    if spec.remote_cidr is not None and ipaddress.ip_address(p.remote) not in ipaddress.ip_network(
        spec.remote_cidr
    ):
        return False
    if spec.protocol != Protocol.ANY and PROTO_NUMBERS[spec.protocol] != p.proto:
        return False
    if spec.port_range is not None and not spec.port_range.first <= p.dport <= spec.port_range.last:
        return False
    return spec.icmp is None or (spec.icmp.type == p.icmp_type and spec.icmp.code in (None, p.icmp_code))


def _value(expr: Any, p: Packet) -> Any:
    if "meta" in expr:
        key = expr["meta"]["key"]
        if key == "nfproto":
            return "ipv4" if p.family == 4 else "ipv6"
        assert key == "l4proto"
        return p.proto
    proto, field = expr["payload"]["protocol"], expr["payload"]["field"]
    if proto in ("ip", "ip6"):
        return ipaddress.ip_address(p.remote)
    if proto == "th":
        return p.dport if p.proto in (6, 17) else None
    if p.proto not in (1, 58):
        return None
    return p.icmp_type if field == "type" else p.icmp_code


def _element_matches(element: Any, values: list[Any]) -> bool:
    parts = element["concat"] if isinstance(element, dict) and "concat" in element else [element]
    assert len(parts) == len(values)
    return all(_part_matches(e, v) for e, v in zip(parts, values, strict=True))


def _part_matches(part: Any, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(part, dict) and "prefix" in part:
        net = ipaddress.ip_network(f"{part['prefix']['addr']}/{part['prefix']['len']}")
        return bool(value in net)
    if isinstance(part, dict) and "range" in part:
        lo, hi = part["range"]
        return bool(lo <= value <= hi)
    if isinstance(part, str):
        return bool(ipaddress.ip_address(part) == value)
    return bool(part == value)
