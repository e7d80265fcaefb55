"""Each bad rule is refused naming the field and saying what is allowed; several bad
rules are all reported in one error."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zsd.errors import InvalidArgument
from zsd.network.secgroups.rules import (
    Direction,
    EtherType,
    IcmpMatch,
    PortRange,
    Protocol,
    RuleSpec,
)
from zsd.network.secgroups.validation import checked_rule, checked_rules

KNOWN = {"web", "app"}
TCP = RuleSpec(direction=Direction.INGRESS, protocol=Protocol.TCP, port_range=PortRange(first=80, last=443))
ICMP = RuleSpec(direction=Direction.INGRESS, protocol=Protocol.ICMP, icmp=IcmpMatch(type=8, code=0))

BAD: list[tuple[str, RuleSpec, str, str]] = [
    (
        "ports on ICMP",
        replace(ICMP, port_range=PortRange(first=1, last=2)),
        "port_range",
        "ports only apply to tcp and udp rules, not to protocol icmp",
    ),
    ("ports on any", replace(TCP, protocol=Protocol.ANY), "port_range", "not to protocol any"),
    ("ICMP type on tcp", replace(TCP, icmp=IcmpMatch(type=8)), "icmp", "only apply to icmp and icmpv6 rules"),
    (
        "port 0",
        replace(TCP, port_range=PortRange(first=0, last=80)),
        "port_range",
        "ports are 1..65535, got 0-80",
    ),
    ("port too big", replace(TCP, port_range=PortRange(first=80, last=70000)), "port_range", "1..65535"),
    (
        "reversed range",
        replace(TCP, port_range=PortRange(first=443, last=80)),
        "port_range",
        "the first port (443) is above the last (80)",
    ),
    ("ICMP type out of range", replace(ICMP, icmp=IcmpMatch(type=256)), "icmp.type", "ICMP types are 0..255"),
    (
        "ICMP code out of range",
        replace(ICMP, icmp=IcmpMatch(type=3, code=-1)),
        "icmp.code",
        "codes are 0..255",
    ),
    ("icmp on ipv6", replace(ICMP, ethertype=EtherType.IPV6), "protocol", "an ipv6 rule uses icmpv6"),
    (
        "icmpv6 on ipv4",
        replace(ICMP, protocol=Protocol.ICMPV6),
        "protocol",
        "icmpv6 is for ipv6 rules; an ipv4 rule uses icmp",
    ),
    ("bad CIDR", replace(TCP, remote_cidr="10.0.0.300/8"), "remote_cidr", "is not a CIDR"),
    (
        "host bits",
        replace(TCP, remote_cidr="10.1.2.3/8"),
        "remote_cidr",
        "host bits set; the network is 10.0.0.0/8",
    ),
    (
        "IPv4 CIDR on an ipv6 rule",
        replace(TCP, ethertype=EtherType.IPV6, remote_cidr="10.0.0.0/8"),
        "remote_cidr",
        "10.0.0.0/8 is an IPv4 CIDR but the rule's ethertype is ipv6",
    ),
    (
        "IPv6 CIDR on an ipv4 rule",
        replace(TCP, remote_cidr="2001:db8::/32"),
        "remote_cidr",
        "is an IPv6 CIDR but the rule's ethertype is ipv4",
    ),
    (
        "unknown remote group",
        replace(TCP, remote_group="dbs"),
        "remote_group",
        "no security group named 'dbs'; known groups: app, web",
    ),
    (
        "CIDR and group",
        replace(TCP, remote_group="web", remote_cidr="10.0.0.0/8"),
        "remote_group",
        "a remote CIDR or a remote group, not both",
    ),
    ("bad direction", replace(TCP, direction="inbound"), "direction", "is not one of ingress, egress"),  # type: ignore[arg-type]
    ("bad protocol", replace(TCP, protocol="sctp"), "protocol", "not one of any, icmp, icmpv6, tcp, udp"),  # type: ignore[arg-type]
    ("bad action", replace(TCP, action="reject"), "action", "not one of allow, deny"),  # type: ignore[arg-type]
    ("long description", replace(TCP, description="x" * 300), "description", "at most 255 characters"),
]


@pytest.mark.parametrize(("spec", "field", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_rule_names_its_field_and_what_is_allowed(spec: RuleSpec, field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        checked_rule(spec, known_groups=KNOWN, field="rule")
    assert e.value.field == f"rule.{field}"
    assert text in e.value.message
    assert e.value.reason == "BAD_SECURITY_GROUP_RULE"


def test_good_rules_pass() -> None:
    for spec in (
        TCP,
        ICMP,
        replace(ICMP, icmp=None),
        replace(TCP, port_range=None, remote_group="app"),
        RuleSpec(direction=Direction.EGRESS, ethertype=EtherType.IPV6, protocol=Protocol.ICMPV6),
        RuleSpec(direction=Direction.EGRESS, protocol=Protocol.UDP, port_range=PortRange.single(65535)),
    ):
        assert checked_rule(spec, known_groups=KNOWN, field="rule") == spec


def test_every_bad_rule_of_a_list_is_reported_in_one_error_with_its_index() -> None:
    specs = [TCP, replace(ICMP, port_range=PortRange(first=1, last=2)), TCP, replace(TCP, remote_group="x")]
    with pytest.raises(InvalidArgument) as e:
        checked_rules(specs, known_groups=KNOWN)
    err = e.value
    assert err.field == "rules"
    assert err.message.startswith("2 problems: rules[1].port_range: ports only apply")
    assert "rules[3].remote_group: no security group named 'x'" in err.message
    assert set(err.metadata) == {"rules[1].port_range", "rules[3].remote_group"}


def test_one_rule_with_two_problems_reports_both() -> None:
    spec = replace(TCP, port_range=PortRange(first=9, last=1), remote_cidr="nonsense")
    with pytest.raises(InvalidArgument) as e:
        checked_rule(spec, known_groups=KNOWN, field="rule")
    assert set(e.value.metadata) == {"rule.port_range", "rule.remote_cidr"}


def test_the_known_group_list_is_shortened() -> None:
    known = {f"g{i:02}" for i in range(25)}
    with pytest.raises(InvalidArgument) as e:
        checked_rule(replace(TCP, remote_group="nope"), known_groups=known, field="rule")
    assert "g09 and 15 more" in e.value.message
