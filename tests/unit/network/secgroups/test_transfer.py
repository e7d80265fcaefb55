"""Export a group's rules as JSON, import them into another group: all or nothing,
every bad rule reported with its index and reason in one error."""

from __future__ import annotations

import json

import pytest

from zsd.errors import InvalidArgument
from zsd.network.secgroups.group import new_group
from zsd.network.secgroups.rules import (
    Action,
    Direction,
    EtherType,
    IcmpMatch,
    PortRange,
    Protocol,
    RuleSpec,
)
from zsd.network.secgroups.transfer import export_rules, import_rules, parse_rules

KNOWN = {"web", "app", "db", "ops"}
RULES = [
    RuleSpec(direction=Direction.INGRESS, protocol=Protocol.TCP, port_range=PortRange(first=80, last=80)),
    RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange(first=8000, last=8099),
        remote_group="web",
        description="app ports",
    ),
    RuleSpec(direction=Direction.INGRESS, protocol=Protocol.ICMP, icmp=IcmpMatch(type=8)),
    RuleSpec(
        direction=Direction.INGRESS,
        ethertype=EtherType.IPV6,
        protocol=Protocol.ICMPV6,
        icmp=IcmpMatch(type=1, code=4),
    ),
    RuleSpec(direction=Direction.EGRESS, remote_cidr="192.0.2.0/24", action=Action.DENY),
]


def test_export_then_import_into_another_group_gives_the_same_rules() -> None:
    source = new_group("app", RULES, known_groups=KNOWN, allow_members=False)
    text = export_rules(source)
    doc = json.loads(text)
    assert doc["group"] == "app" and doc["allow_members"] is False
    assert doc["rules"][1] == {
        "priority": 1,
        "direction": "ingress",
        "ethertype": "ipv4",
        "protocol": "tcp",
        "port_range": {"first": 8000, "last": 8099},
        "remote_group": "web",
        "action": "allow",
        "description": "app ports",
    }
    target = new_group("app2", [RULES[0]], known_groups=KNOWN)
    imported = import_rules(target, text, known_groups=KNOWN)
    assert imported.name == "app2"
    assert imported.specs == source.specs
    assert imported.allow_members is False


def test_fields_left_out_take_their_defaults() -> None:
    doc = parse_rules('{"rules": [{"direction": "egress"}]}', known_groups=KNOWN)
    assert doc.rules == (RuleSpec(direction=Direction.EGRESS),)
    assert doc.allow_members is None


def test_one_bad_rule_among_many_changes_nothing_and_every_problem_is_listed() -> None:
    good = json.loads(export_rules(new_group("app", RULES, known_groups=KNOWN)))["rules"]
    rules = [
        *good,
        {"direction": "ingress", "protocol": "icmp", "port_range": {"first": 22, "last": 22}},
        {"direction": "ingress", "protocol": "tcp", "remote_group": "nowhere"},
        {"direction": "sideways"},
        {"direction": "ingress", "colour": "blue"},
        {"direction": "ingress", "protocol": "tcp", "port_range": "22"},
        {"direction": "ingress", "remote_cidr": "10.0.0.0/33"},
        "not a rule",
        {"protocol": "tcp"},
        {"direction": "ingress", "priority": 3},
    ]
    target = new_group("copy", [RULES[0]], known_groups=KNOWN)
    with pytest.raises(InvalidArgument) as e:
        import_rules(target, json.dumps({"rules": rules}), known_groups=KNOWN)
    n = len(good)
    assert e.value.field == "rules"
    assert e.value.reason == "BAD_SECURITY_GROUP_RULE"
    assert set(e.value.metadata) == {
        f"rules[{n}].port_range",
        f"rules[{n + 1}].remote_group",
        f"rules[{n + 2}].direction",
        f"rules[{n + 3}].colour",
        f"rules[{n + 4}].port_range",
        f"rules[{n + 5}].remote_cidr",
        f"rules[{n + 6}]",
        f"rules[{n + 7}].direction",
        f"rules[{n + 8}].priority",
    }
    assert e.value.message.startswith("9 problems: ")
    assert (
        "ports only apply to tcp and udp rules, not to protocol icmp"
        in e.value.metadata[f"rules[{n}].port_range"]
    )
    assert "'sideways' is not one of ingress, egress" in e.value.metadata[f"rules[{n + 2}].direction"]
    assert "this one's priority is" in e.value.metadata[f"rules[{n + 8}].priority"]
    assert target.specs == (RULES[0],)  # frozen: nothing could change, and nothing did


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "document"),
        ("[1, 2]", "document"),
        ('{"rules": {}}', "rules"),
        ('{"format": "other/v9", "rules": []}', "format"),
        ('{"allow_members": "yes", "rules": []}', "allow_members"),
    ],
)
def test_a_malformed_document_is_refused(text: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_rules(text, known_groups=KNOWN)
    assert e.value.field == field


def test_rules_may_refer_to_the_group_they_are_imported_into() -> None:
    text = json.dumps({"rules": [{"direction": "ingress", "remote_group": "brand-new"}]})
    g = import_rules(new_group("brand-new", known_groups=KNOWN), text, known_groups=KNOWN)
    assert g.rules[0].spec.remote_group == "brand-new"
