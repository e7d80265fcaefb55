"""One security group compiled: a chain per direction and the sets its statements
look up, each element counting for one rule.

Shared by every NIC that uses the group (the NIC chains jump to it), and
independent of the NICs and of membership, so a group is recompiled only when its
rules change. A chain's rules are the packed statements of :mod:`packing` in
priority order; a statement that matches ends evaluation with the run's verdict
(accept or drop), a packet that matches nothing returns to the NIC chain, which
tries its next group.

Counter ids follow the rule, not its priority (``rule_<group>_<digest of the
match>``), and a statement's set is named after its first rule, so renumbering or
changing other rules leaves a rule's element (and its counter) where it is.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from zsd.network.secgroups import nftobjects as nx
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.hostmodel import CounterIndex, CounterRef, MembersRuleRef, RuleRef
from zsd.network.secgroups.nftobjects import Chain, Json, NftSet
from zsd.network.secgroups.packing import FULL_PROTO, FULL_SUB, Kind, Piece, Statement, pack
from zsd.network.secgroups.rules import Action, Direction, EtherType, Protocol, RuleSpec

PROTO_NUMBERS = {Protocol.ICMP: 1, Protocol.TCP: 6, Protocol.UDP: 17, Protocol.ICMPV6: 58}
SUFFIX = {Direction.INGRESS: "in", Direction.EGRESS: "out"}


@dataclass(frozen=True, kw_only=True)
class GroupParts:
    group: SecurityGroup
    chains: tuple[Chain, ...]
    sets: tuple[NftSet, ...]
    index: CounterIndex


def chain_name(group: str, direction: Direction) -> str:
    return f"sg_{group}_{SUFFIX[direction]}"


def member_set(group: str, family: int) -> str:
    return f"members_{group}_v{family}"


def compile_group(group: SecurityGroup) -> GroupParts:
    counters: dict[str, CounterRef] = {}
    elements: dict[tuple[str, nx.Canonical], str] = {}
    names = _counter_names(group)
    chains: list[Chain] = []
    sets: list[NftSet] = []
    for direction in Direction:
        pieces: list[tuple[Action, Piece]] = []
        for rule in group.rules:
            if rule.spec.direction != direction:
                continue
            name = names[rule.priority]
            counters[name] = RuleRef(group=group.name, priority=rule.priority, direction=direction)
            pieces.append((rule.spec.action, _piece(rule.spec, name)))
        if group.allow_members:
            for family in (4, 6):
                name = f"builtin_{group.name}_{SUFFIX[direction]}_v{family}"
                counters[name] = MembersRuleRef(group=group.name, direction=direction)
                member = Piece(
                    family=family,
                    kind=Kind.PROTO,
                    remote_group=group.name,
                    net=0,
                    plen=0,
                    proto=FULL_PROTO,
                    sub=FULL_SUB,
                    counter=name,
                )
                pieces.append((Action.ALLOW, member))
        chain = chain_name(group.name, direction)
        rules: list[tuple[Json, ...]] = []
        for action, statement in _statements(pieces):
            first = hashlib.sha1(statement.pieces[0].counter.encode(), usedforsecurity=False).hexdigest()[:8]
            exprs, lookup = _statement(statement, direction, action, f"{chain}_{first}")
            rules.append(exprs)
            sets.append(lookup)
            for piece, key in zip(statement.pieces, lookup.elements, strict=True):
                elements[(lookup.name, nx.canonical(key))] = piece.counter
        chains.append(Chain(name=chain, rules=tuple(rules)))
    index = CounterIndex(elements=elements, refs=counters)
    return GroupParts(group=group, chains=tuple(chains), sets=tuple(sets), index=index)


def _statements(pieces: list[tuple[Action, Piece]]) -> Iterator[tuple[Action, Statement]]:
    """Runs of same-action pieces, each packed."""
    start = 0
    while start < len(pieces):
        action = pieces[start][0]
        end = start
        while end < len(pieces) and pieces[end][0] == action:
            end += 1
        for statement in pack(p for _, p in pieces[start:end]):
            yield action, statement
        start = end


def _counter_names(group: SecurityGroup) -> dict[int, str]:
    seen: dict[str, int] = {}
    out: dict[int, str] = {}
    for rule in group.rules:
        digest = _digest(rule.spec)
        seen[digest] = seen.get(digest, 0) + 1
        suffix = "" if seen[digest] == 1 else f"_{seen[digest]}"
        out[rule.priority] = f"rule_{group.name}_{digest}{suffix}"
    return out


def _digest(spec: RuleSpec) -> str:
    """What the rule matches and does (not its description or place)."""
    icmp = "" if spec.icmp is None else f"{spec.icmp.type}/{spec.icmp.code}"
    text = "|".join(
        str(x)
        for x in (
            spec.direction,
            spec.ethertype,
            spec.protocol,
            spec.port_range or "",
            icmp,
            spec.remote_cidr or "",
            spec.remote_group or "",
            spec.action,
        )
    )
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:10]


def _piece(spec: RuleSpec, counter: str) -> Piece:
    family = 4 if spec.ethertype == EtherType.IPV4 else 6
    if spec.remote_group is not None:
        net, plen = 0, 0
    else:
        network = ipaddress.ip_network(spec.remote_cidr or ("0.0.0.0/0" if family == 4 else "::/0"))
        net, plen = int(network.network_address), network.prefixlen
    if spec.protocol == Protocol.ANY:
        kind, proto, sub = Kind.PROTO, FULL_PROTO, FULL_SUB
    else:
        number = PROTO_NUMBERS[spec.protocol]
        proto = (number, number)
        if spec.port_range is not None:
            kind, sub = Kind.PORTS, (spec.port_range.first, spec.port_range.last)
        elif spec.icmp is not None:
            base = spec.icmp.type << 8
            codes = (0, 255) if spec.icmp.code is None else (spec.icmp.code, spec.icmp.code)
            kind, sub = Kind.ICMP, (base + codes[0], base + codes[1])
        else:
            kind, sub = Kind.PROTO, FULL_SUB
    return Piece(
        family=family,
        kind=kind,
        remote_group=spec.remote_group,
        net=net,
        plen=plen,
        proto=proto,
        sub=sub,
        counter=counter,
    )


def _statement(
    statement: Statement, direction: Direction, action: Action, set_name: str
) -> tuple[tuple[Json, ...], NftSet]:
    """The chain rule for a statement and the counting set it looks up."""
    family = statement.family
    ip = "ip" if family == 4 else "ip6"
    address = nx.payload(ip, "saddr" if direction == Direction.INGRESS else "daddr")
    exprs: list[Json] = [nx.match(nx.meta("nfproto"), "ipv4" if family == 4 else "ipv6")]
    key: list[Json] = []
    types: list[str] = []
    if statement.remote_group is not None:
        exprs.append(nx.match(address, f"@{member_set(statement.remote_group, family)}"))
    else:
        key.append(address)
        types.append("ipv4_addr" if family == 4 else "ipv6_addr")
    icmp = "icmp" if family == 4 else "icmpv6"
    if statement.kind is Kind.PROTO:
        key.append(nx.meta("l4proto"))
        types.append("inet_proto")
    elif statement.kind is Kind.PORTS:
        key += [nx.meta("l4proto"), nx.payload("th", "dport")]
        types += ["inet_proto", "inet_service"]
    else:
        exprs.append(nx.match(nx.meta("l4proto"), 1 if family == 4 else 58))
        key += [nx.payload(icmp, "type"), nx.payload(icmp, "code")]
        types += [f"{icmp}_type", f"{icmp}_code"]
    exprs.append(nx.match(nx.concat(*key), f"@{set_name}"))
    exprs.append(nx.verdict("accept" if action == Action.ALLOW else "drop"))
    elements = tuple(_element(p, statement) for p in statement.pieces)
    lookup = NftSet(name=set_name, key=tuple(types), interval=True, counters=True, elements=elements)
    return tuple(exprs), lookup


def _element(piece: Piece, statement: Statement) -> Json:
    values: list[Json] = []
    if statement.remote_group is None:
        bits = 32 if piece.family == 4 else 128
        address = ipaddress.IPv4Address(piece.net) if piece.family == 4 else ipaddress.IPv6Address(piece.net)
        values.append(nx.prefix(str(address), piece.plen, bits))
    if piece.kind is Kind.PROTO:
        values.append(nx.span(*piece.proto))
    elif piece.kind is Kind.PORTS:
        values += [piece.proto[0], nx.span(*piece.sub)]
    else:
        values += [piece.sub[0] >> 8, nx.span(piece.sub[0] & 255, piece.sub[1] & 255)]
    return nx.concat(*values)
