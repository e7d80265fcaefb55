"""Group chains: runs of same-action rules packed into set lookups. Packing must not
change what any packet sees (verdict and which rule's counter counts it), and a
chain's length must follow action changes, not the rule count."""

from __future__ import annotations

import random

import pytest

from tests.unit.network.secgroups.chaineval import Packet, first_match, member_sets, run_chain
from zsd.network.secgroups.group import SecurityGroup, new_group
from zsd.network.secgroups.groupchains import compile_group
from zsd.network.secgroups.hostmodel import MembersRuleRef, RuleRef
from zsd.network.secgroups.nftobjects import canonical
from zsd.network.secgroups.rules import (
    Action,
    Direction,
    EtherType,
    IcmpMatch,
    PortRange,
    Protocol,
    RuleSpec,
)

KNOWN = {"g", "a", "b"}
CIDRS4 = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.168.0.0/16", None]
CIDRS6 = ["::/0", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::7/128", None]
ADDRS4 = ["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.200.0.1", "192.168.1.1", "8.8.8.8"]
ADDRS6 = ["2001:db8:1::7", "2001:db8:1::8", "2001:db8:2::1", "2001:dead::1"]
MEMBERS = {
    "a": {"10.1.2.4", "192.168.1.1", "2001:db8:1::8"},
    "b": {"10.1.2.4", "8.8.8.8"},
    "g": {"10.200.0.1"},
}


def random_rule(rng: random.Random) -> RuleSpec:
    v6 = rng.random() < 0.3
    protocol = rng.choice(
        [Protocol.ANY, Protocol.TCP, Protocol.UDP, Protocol.ICMPV6 if v6 else Protocol.ICMP]
    )
    ports = icmp = None
    if protocol in (Protocol.TCP, Protocol.UDP) and rng.random() < 0.8:
        first = rng.choice([22, 80, 443, 1000, 8080])
        ports = PortRange(first=first, last=first + rng.choice([0, 0, 10, 1000]))
    if protocol in (Protocol.ICMP, Protocol.ICMPV6) and rng.random() < 0.7:
        icmp = IcmpMatch(type=rng.choice([0, 3, 8]), code=rng.choice([None, 0, 1]))
    remote_cidr = remote_group = None
    if rng.random() < 0.25:
        remote_group = rng.choice(["a", "b", "g"])
    else:
        remote_cidr = rng.choice(CIDRS6 if v6 else CIDRS4)
    return RuleSpec(
        direction=rng.choice([Direction.INGRESS, Direction.EGRESS]),
        ethertype=EtherType.IPV6 if v6 else EtherType.IPV4,
        protocol=protocol,
        port_range=ports,
        icmp=icmp,
        remote_cidr=remote_cidr,
        remote_group=remote_group,
        # long runs of one action, with some switches
        action=Action.ALLOW if rng.random() < 0.75 else Action.DENY,
    )


def random_packet(rng: random.Random) -> Packet:
    v6 = rng.random() < 0.3
    proto = rng.choice([6, 17, 58 if v6 else 1, 47])
    return Packet(
        remote=rng.choice(ADDRS6 if v6 else ADDRS4),
        proto=proto,
        dport=rng.choice([22, 80, 81, 443, 1005, 8080, 9000]),
        icmp_type=rng.choice([0, 3, 8]),
        icmp_code=rng.choice([0, 1, 2]),
    )


@pytest.mark.parametrize("seed", range(40))
def test_packed_chains_decide_and_count_like_first_match(seed: int) -> None:
    rng = random.Random(seed)
    rules = [random_rule(rng) for _ in range(rng.randint(1, 60))]
    group = new_group("g", rules, known_groups=KNOWN, allow_members=rng.random() < 0.5)
    parts = compile_group(group)
    sets = member_sets(MEMBERS)
    for _ in range(300):
        packet = random_packet(rng)
        member_of = {g for g, addresses in MEMBERS.items() if packet.remote in addresses}
        for direction in Direction:
            expected = first_match(group, parts, direction, packet, member_of)
            assert run_chain(parts, direction, packet, sets) == expected, (packet, direction)


def tcp_rules(count: int, action: Action = Action.ALLOW, start: int = 0) -> list[RuleSpec]:
    """``count`` rules that overlap nowhere: one /32 and port each."""
    return [
        RuleSpec(
            direction=Direction.INGRESS,
            protocol=Protocol.TCP,
            port_range=PortRange.single(1000 + i % 50000),
            remote_cidr=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32",
            action=action,
        )
        for i in range(start, start + count)
    ]


def ingress(parts_group: SecurityGroup) -> int:
    parts = compile_group(parts_group)
    return len(next(c for c in parts.chains if c.name.endswith("_in")).rules)


def test_chain_length_does_not_grow_with_the_rule_count() -> None:
    small = new_group("g", tcp_rules(100), known_groups=KNOWN, allow_members=False)
    large = new_group("g", tcp_rules(10_000), known_groups=KNOWN, allow_members=False)
    assert ingress(small) == ingress(large) == 1
    parts = compile_group(large)
    (lookup,) = parts.sets
    assert len(lookup.elements) == 10_000
    assert lookup.key == ("ipv4_addr", "inet_proto", "inet_service") and lookup.interval and lookup.counters


def test_each_action_change_adds_a_statement_per_shape() -> None:
    rules = tcp_rules(30) + tcp_rules(30, Action.DENY) + tcp_rules(30)
    # the deny run shadows nothing the packer cares about: runs stay separate
    group = new_group("g", rules, known_groups=KNOWN, allow_members=False)
    assert ingress(group) == 3
    mixed = [
        *tcp_rules(5),
        RuleSpec(direction=Direction.INGRESS, protocol=Protocol.ICMP, icmp=IcmpMatch(type=8)),
        RuleSpec(direction=Direction.INGRESS, ethertype=EtherType.IPV6, protocol=Protocol.UDP),
        *tcp_rules(5, start=5),
        RuleSpec(direction=Direction.INGRESS, protocol=Protocol.TCP, remote_group="a"),
    ]
    # four shapes (v4 ports, v4 icmp, v6 protocol, member set of a) in one run
    assert ingress(new_group("g", mixed, known_groups=KNOWN, allow_members=False)) == 4
    # a member of "a" may have any address: a later CIDR rule it could overlap must
    # come after it for the counters to stay right
    later = [*mixed, *tcp_rules(5, start=10)]
    assert ingress(new_group("g", later, known_groups=KNOWN, allow_members=False)) == 5


def test_an_overlapping_rule_opens_a_new_statement_after_the_rules_it_overlaps() -> None:
    wide = RuleSpec(
        direction=Direction.INGRESS, protocol=Protocol.TCP, port_range=PortRange(first=1, last=9000)
    )
    narrow = RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange.single(80),
        remote_cidr="10.0.0.0/8",
    )
    other = RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange.single(22),
        remote_cidr="192.0.2.0/24",
    )
    group = new_group("g", [wide, narrow, other], known_groups=KNOWN, allow_members=False)
    parts = compile_group(group)
    assert ingress(group) == 2
    first, second = parts.sets
    assert [parts.index.refs[parts.index.elements[(first.name, canonical(e))]] for e in first.elements] == [
        _ref(0)
    ]
    assert len(second.elements) == 2  # "other" overlaps nothing after it: it joins the newest statement


def _ref(priority: int) -> RuleRef:
    return RuleRef(group="g", priority=priority, direction=Direction.INGRESS)


def test_counters_follow_rules_not_priorities() -> None:
    rules = tcp_rules(3)
    group = new_group("g", rules, known_groups=KNOWN)
    parts = compile_group(group)
    before = {r.priority: n for n, r in parts.index.refs.items() if isinstance(r, RuleRef)}
    moved = group.insert_rule(0, RuleSpec(direction=Direction.EGRESS), known_groups=KNOWN)
    moved_parts = compile_group(moved)
    after = {r.priority: n for n, r in moved_parts.index.refs.items() if isinstance(r, RuleRef)}
    assert [after[p + 1] for p in range(3)] == [before[p] for p in range(3)]
    # the elements stay in a set of the same name: the kernel keeps counting on them
    assert {s.name for s in parts.sets if "_in_" in s.name} == {
        s.name for s in moved_parts.sets if "_in_" in s.name
    }
    twice = new_group("g", [rules[0], rules[0]], known_groups=KNOWN)
    names = [n for n, r in compile_group(twice).index.refs.items() if isinstance(r, RuleRef)]
    assert len(set(names)) == 2


def test_the_builtin_rule_matches_member_sets_and_counts_per_direction() -> None:
    parts = compile_group(new_group("g", known_groups=KNOWN))
    assert len(parts.sets) == 4  # in/out, v4/v6: any protocol (0-255)
    assert all(s.elements == ({"range": [0, 255]},) for s in parts.sets)
    assert set(parts.index.refs.values()) == {
        MembersRuleRef(group="g", direction=Direction.INGRESS),
        MembersRuleRef(group="g", direction=Direction.EGRESS),
    }
    chain = next(c for c in parts.chains if c.name == "sg_g_in")
    assert [r[1] for r in chain.rules] == [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": p, "field": "saddr"}},
                "right": f"@members_g_v{v}",
            }
        }
        for p, v in (("ip", 4), ("ip6", 6))
    ]
