"""The Python evaluation of a host's policy agrees with the compiled chains, and
attributes connections to NICs by zone and address."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tests.unit.network.secgroups.chaineval import Packet, member_sets, run_chain
from tests.unit.network.secgroups.hosts import tcp_in, three_tier
from zsd.network.secgroups.admission import ICMP, ICMPV6, TCP, UDP, Admission, Check, Flow
from zsd.network.secgroups.group import new_group
from zsd.network.secgroups.groupchains import compile_group
from zsd.network.secgroups.hostmodel import GroupMembers, HostFirewall, HostNic, membership
from zsd.network.secgroups.rules import (
    Action,
    Direction,
    EtherType,
    IcmpMatch,
    PortRange,
    Protocol,
    RuleSpec,
)

ZONES = {"zb1": 16500, "zb2": 16501}
WEB = HostNic(
    port="tap-web",
    mac="52:54:00:00:00:01",
    ipv4=("10.0.0.1",),
    ipv6=("fd00::1",),
    groups=("web", "ops"),
    bridge="zb1",
)
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app",), bridge="zb1")
OTHER = HostNic(port="tap-other", mac="52:54:00:00:00:03", ipv4=("10.0.0.1",), groups=("db",), bridge="zb2")


def firewall(*nics: HostNic) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(ops_cidr="192.0.2.0/24"), members=membership(nics))


def tcp(src: str, dst: str, dport: int, zone: int = 16500) -> Flow:
    return Flow(zone=zone, src=src, dst=dst, proto=TCP, sport=40000, dport=dport)


def test_a_flow_is_checked_by_the_nics_at_its_ends_in_its_zone() -> None:
    admission = Admission(firewall(WEB, APP, OTHER), ZONES)
    assert admission.checks(tcp("10.0.0.1", "10.0.0.2", 8080)) == (
        Check(nic=WEB, direction=Direction.EGRESS),
        Check(nic=APP, direction=Direction.INGRESS),
    )
    assert admission.checks(tcp("198.51.100.1", "10.0.0.1", 80, zone=16501)) == (
        Check(nic=OTHER, direction=Direction.INGRESS),
    )
    assert admission.checks(tcp("198.51.100.1", "10.0.0.1", 80, zone=0)) == ()  # not zsd's zone
    assert admission.checks(tcp("fe80::1", "fe80::2", 80)) == ()  # link-local: no NIC's address
    no_bridge = replace(WEB, bridge="")
    assert Admission(firewall(no_bridge), ZONES).checks(tcp("198.51.100.1", "10.0.0.1", 80, zone=0)) == (
        Check(nic=no_bridge, direction=Direction.INGRESS),
    )


def test_both_ends_must_admit_a_flow_between_two_nics_here() -> None:
    admission = Admission(firewall(WEB, APP), ZONES)
    assert admission.admits(tcp("10.0.0.1", "10.0.0.2", 8080))  # app takes 8080 from web
    assert not admission.admits(tcp("10.0.0.2", "10.0.0.1", 8080))  # web does not
    denied_out = Admission(firewall(replace(WEB, egress_default=Action.DENY), APP), ZONES)
    assert not denied_out.admits(tcp("10.0.0.1", "10.0.0.2", 8080))
    assert admission.admits(tcp("198.51.100.7", "203.0.113.9", 22))  # nobody's: never judged


def test_groups_are_tried_in_the_nics_order_then_the_default() -> None:
    known = {"deny22", "allow22"}
    deny22 = new_group(
        "deny22",
        [replace(tcp_in(22), action=Action.DENY)],
        known_groups=known,
        allow_members=False,
    )
    allow22 = new_group("allow22", [tcp_in(22)], known_groups=known, allow_members=False)
    groups = {"deny22": deny22, "allow22": allow22}
    flow = tcp("198.51.100.1", "10.0.0.1", 22)
    for order, admitted in ((("deny22", "allow22"), False), (("allow22", "deny22"), True)):
        nic = replace(WEB, groups=order)
        assert Admission(HostFirewall(nics=(nic,), groups=groups), ZONES).admits(flow) is admitted
    opened = replace(WEB, groups=(), ingress_default=Action.ALLOW)
    assert Admission(HostFirewall(nics=(opened,), groups=groups), ZONES).admits(flow)


@pytest.mark.parametrize(
    ("flow", "admitted"),
    [
        (Flow(zone=16500, src="10.0.0.1", dst="255.255.255.255", proto=UDP, sport=68, dport=67), True),
        (Flow(zone=16500, src="10.0.0.1", dst="10.0.0.9", proto=UDP, sport=67, dport=68), False),
        (Flow(zone=16500, src="10.0.0.9", dst="10.0.0.1", proto=UDP, sport=67, dport=68), True),
        (Flow(zone=16500, src="fd00::1", dst="ff02::2", proto=ICMPV6, icmp_type=133), True),
        (Flow(zone=16500, src="fd00::1", dst="ff02::1", proto=ICMPV6, icmp_type=134), False),
        (Flow(zone=16500, src="fd00::9", dst="fd00::1", proto=ICMPV6, icmp_type=134), True),
        (Flow(zone=16500, src="198.51.100.1", dst="10.0.0.1", proto=ICMP, icmp_type=8), True),
        (Flow(zone=16500, src="198.51.100.1", dst="10.0.0.1", proto=UDP, sport=5, dport=80), False),
    ],
)
def test_implicit_rules_and_the_guard_as_compiled(flow: Flow, admitted: bool) -> None:
    assert Admission(firewall(replace(WEB, egress_default=Action.DENY)), ZONES).admits(flow) is admitted


def _random_spec(rng: random.Random, groups: list[str]) -> RuleSpec:
    protocol = rng.choice([Protocol.ANY, Protocol.TCP, Protocol.UDP, Protocol.ICMP])
    ports = None
    icmp = None
    if protocol in (Protocol.TCP, Protocol.UDP) and rng.random() < 0.7:
        first = rng.randint(20, 30)
        ports = PortRange(first=first, last=first + rng.randint(0, 5))
    if protocol == Protocol.ICMP and rng.random() < 0.5:
        icmp = IcmpMatch(type=rng.choice([0, 8]), code=rng.choice([None, 0]))
    remote_group = rng.choice(groups) if rng.random() < 0.3 else None
    cidr = None if remote_group else rng.choice([None, "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32"])
    return RuleSpec(
        direction=rng.choice(list(Direction)),
        ethertype=EtherType.IPV4,
        protocol=protocol,
        port_range=ports,
        icmp=icmp,
        remote_cidr=cidr,
        remote_group=remote_group,
        action=rng.choice(list(Action)),
    )


def test_the_evaluation_agrees_with_the_compiled_group_chains() -> None:
    rng = random.Random(7)
    names = ["g0", "g1", "g2"]
    members = {"g0": {"10.1.2.3", "10.9.0.1"}, "g1": {"10.1.5.5"}, "g2": set()}
    remotes = ["10.1.2.3", "10.1.2.4", "10.1.7.7", "10.9.0.1", "10.1.5.5", "192.0.2.1"]
    for _ in range(60):
        group = new_group(
            "g0",
            [_random_spec(rng, names) for _ in range(rng.randint(1, 8))],
            known_groups=set(names),
            allow_members=rng.random() < 0.5,
        )
        parts = compile_group(group)
        nic = HostNic(port="tap-x", mac="52:54:00:00:00:09", ipv4=("10.5.0.1",), groups=("g0",), bridge="zb1")
        fw = HostFirewall(
            nics=(nic,),
            groups={"g0": group},
            members={g: GroupMembers(ipv4=frozenset(a)) for g, a in members.items()},
        )
        admission = Admission(fw, ZONES)
        for _ in range(40):
            direction = rng.choice(list(Direction))
            remote = rng.choice(remotes)
            proto = rng.choice([TCP, UDP, ICMP])
            dport = rng.randint(18, 37) if proto != ICMP else 0
            icmp_type = rng.choice([0, 8]) if proto == ICMP else 0
            packet = Packet(remote=remote, proto=proto, dport=dport, icmp_type=icmp_type)
            outcome = run_chain(parts, direction, packet, member_sets(members))
            expected = nic.default(direction) == Action.ALLOW if outcome is None else outcome[0] == "accept"
            src, dst = (remote, "10.5.0.1") if direction == Direction.INGRESS else ("10.5.0.1", remote)
            flow = Flow(
                zone=16500, src=src, dst=dst, proto=proto, sport=50000, dport=dport, icmp_type=icmp_type
            )
            assert admission.admits(flow) is expected, (group.rules, direction, packet)
