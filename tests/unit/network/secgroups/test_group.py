"""Rule list semantics: priorities are consecutive from 0, a new rule goes last,
inserting shifts, deleting renumbers; the built-in rule can be disabled, never
deleted; every change is checked."""

from __future__ import annotations

import pytest

from zsd.errors import InvalidArgument, NotFound
from zsd.network.secgroups.group import SecurityGroup, new_group
from zsd.network.secgroups.rules import Action, Direction, EtherType, PortRange, Protocol, RuleSpec

KNOWN = {"web", "app", "db"}


def tcp(port: int, **kw: object) -> RuleSpec:
    return RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange.single(port),
        **kw,  # type: ignore[arg-type]
    )


def ports(group: SecurityGroup) -> list[tuple[int, int]]:
    return [(r.priority, r.spec.port_range.first if r.spec.port_range else 0) for r in group.rules]


def test_new_rules_go_last_with_the_next_priority() -> None:
    g = new_group("web", known_groups=KNOWN)
    g = g.add_rule(tcp(80), known_groups=KNOWN).add_rule(tcp(443), known_groups=KNOWN)
    assert ports(g) == [(0, 80), (1, 443)]


def test_inserting_shifts_the_rule_there_and_every_later_one() -> None:
    g = new_group("web", [tcp(80), tcp(443)], known_groups=KNOWN)
    g = g.insert_rule(0, tcp(22), known_groups=KNOWN)
    assert ports(g) == [(0, 22), (1, 80), (2, 443)]
    g = g.insert_rule(2, tcp(8080), known_groups=KNOWN)
    assert ports(g) == [(0, 22), (1, 80), (2, 8080), (3, 443)]
    g = g.insert_rule(4, tcp(9000), known_groups=KNOWN)  # the count itself: append
    assert ports(g)[-1] == (4, 9000)


def test_deleting_renumbers_the_rest() -> None:
    g = new_group("web", [tcp(22), tcp(80), tcp(443)], known_groups=KNOWN)
    assert ports(g.delete_rule(0)) == [(0, 80), (1, 443)]
    assert ports(g.delete_rule(1)) == [(0, 22), (1, 443)]
    assert ports(g.delete_rule(2)) == [(0, 22), (1, 80)]


def test_moving_a_rule() -> None:
    g = new_group("web", [tcp(22), tcp(80), tcp(443)], known_groups=KNOWN)
    assert ports(g.move_rule(0, 2)) == [(0, 80), (1, 443), (2, 22)]
    assert ports(g.move_rule(2, 0)) == [(0, 443), (1, 22), (2, 80)]


def test_priorities_outside_the_list_are_refused_with_the_field() -> None:
    g = new_group("web", [tcp(22)], known_groups=KNOWN)
    with pytest.raises(NotFound) as nf:
        g.delete_rule(1)
    assert nf.value.field == "priority" and "priorities 0..0" in nf.value.message
    with pytest.raises(InvalidArgument) as bad:
        g.insert_rule(3, tcp(80), known_groups=KNOWN)
    assert bad.value.field == "priority" and "between 0 and 1" in bad.value.message
    with pytest.raises(NotFound):
        new_group("web", known_groups=KNOWN).rule(0)


def test_a_group_cannot_be_built_with_holes_in_its_priorities() -> None:
    from zsd.network.secgroups.rules import Rule

    with pytest.raises(InvalidArgument) as e:
        SecurityGroup(name="web", rules=(Rule(priority=0, spec=tcp(1)), Rule(priority=2, spec=tcp(2))))
    assert e.value.field == "rules[1].priority"


def test_the_builtin_rule_is_on_by_default_and_can_be_disabled_not_deleted() -> None:
    g = new_group("web", [tcp(80)], known_groups=KNOWN)
    assert g.allow_members and g.remote_groups() == {"web"}
    off = g.with_allow_members(False)
    assert not off.allow_members and off.remote_groups() == frozenset()
    assert len(off.rules) == 1  # the numbered rules are not touched
    assert not hasattr(g, "delete_builtin_rule")


def test_a_bad_rule_changes_nothing() -> None:
    g = new_group("web", [tcp(80)], known_groups=KNOWN)
    with pytest.raises(InvalidArgument) as e:
        g.add_rule(tcp(80, remote_group="nope"), known_groups=KNOWN)
    assert e.value.field == "rule.remote_group"
    assert ports(g) == [(0, 80)]


def test_rules_may_name_their_own_group_and_are_normalized() -> None:
    g = new_group(
        "fresh",
        [
            tcp(22, remote_group="fresh"),
            tcp(80, remote_cidr="10.1.2.3"),
            RuleSpec(
                direction="egress",  # type: ignore[arg-type]
                ethertype=EtherType.IPV6,
                remote_cidr="2001:DB8:0::/32",
                action="deny",  # type: ignore[arg-type]
            ),
        ],
        known_groups=KNOWN,
    )
    assert g.rules[1].spec.remote_cidr == "10.1.2.3/32"
    third = g.rules[2].spec
    assert third.remote_cidr == "2001:db8::/32"
    assert third.direction is Direction.EGRESS and third.action is Action.DENY
    assert g.remote_groups() == {"fresh"}


def test_group_names_are_resource_names() -> None:
    with pytest.raises(InvalidArgument) as e:
        new_group("Web Servers", known_groups=KNOWN)
    assert e.value.field == "security_group_id"
