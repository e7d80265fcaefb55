"""The host ruleset: its tables and hooks, NIC dispatch, default policies, what a
change touches (a rule: its group; membership: set elements only), and a size
that follows NICs and groups, not rules."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.network.secgroups.fakenft import FakeNft
from tests.unit.network.secgroups.hosts import synthetic, tcp_in, three_tier
from zsd.errors import InvalidArgument
from zsd.network.secgroups.compiler import FROM_TAG, TABLE, TO_TAG, Compiler, compile_ruleset
from zsd.network.secgroups.hostmodel import (
    CompiledRuleset,
    DefaultRef,
    GroupMembers,
    HostFirewall,
    HostNic,
    RuleRef,
    membership,
)
from zsd.network.secgroups.nftobjects import Chain, NftSet, Table, canonical, diff_transaction
from zsd.network.secgroups.rules import Action, Direction

WEB = HostNic(
    port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), ipv6=("fd00::1",), groups=("web", "ops")
)
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app", "ops"))
DB = HostNic(
    port="tap-db",
    mac="52:54:00:00:00:03",
    ipv4=("10.0.0.3",),
    groups=("db",),
    ingress_default=Action.ALLOW,
    egress_default=Action.DENY,
)


def host(*nics: HostNic) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(), members=membership(nics))


def table(c: CompiledRuleset, family: str) -> Table:
    return next(t for t in c.ruleset.tables if t.family == family)


def chain(t: Table, name: str) -> Chain:
    return next(c for c in t.chains if c.name == name)


def nft_set(t: Table, name: str) -> NftSet:
    return next(s for s in t.sets if s.name == name)


def test_two_tables_with_the_mark_recipe_hooks() -> None:
    c = compile_ruleset(host(WEB, APP, DB))
    assert [(t.family, t.name) for t in c.ruleset.tables] == [("bridge", TABLE), ("inet", TABLE)]
    bridge, inet = table(c, "bridge"), table(c, "inet")
    hooks = {
        (t.family, ch.name): (ch.hook.hook, ch.hook.priority)
        for t in (bridge, inet)
        for ch in t.chains
        if ch.hook
    }
    assert hooks == {
        ("bridge", "prerouting"): ("prerouting", -200),
        ("bridge", "forward"): ("forward", -100),
        ("inet", "egress"): ("prerouting", 0),
        ("inet", "ingress"): ("forward", 0),
        # before conntrack (-200): the port group's zone
        ("inet", "zone_in"): ("prerouting", -300),
        ("inet", "zone_out"): ("output", -300),
    }
    assert chain(inet, "egress").rules == (
        ({"vmap": {"key": {"meta": {"key": "mark"}}, "data": "@egress_nics"}},),
    )
    marks = c.marks
    assert nft_set(bridge, "from_mark").elements == tuple(
        (n.port, FROM_TAG | marks[n.port]) for n in (WEB, APP, DB)
    )
    assert nft_set(bridge, "to_mark").elements == tuple(
        (n.port, TO_TAG | marks[n.port]) for n in (WEB, APP, DB)
    )
    assert nft_set(inet, "ingress_nics").elements[0] == (
        TO_TAG | marks["tap-web"],
        {"goto": {"target": "nic_tap-web_in"}},
    )
    assert nft_set(bridge, "port_ipv6").elements == ({"concat": ["tap-web", "fd00::1"]},)


def test_the_ruleset_is_one_libnftables_transaction() -> None:
    doc = compile_ruleset(host(WEB, APP, DB)).to_nft_json()
    commands = doc["nftables"]
    table = {"family": "bridge", "name": TABLE}
    assert commands[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    assert {next(iter(c)) for c in commands} == {"add", "delete"}
    nft = FakeNft()
    assert nft.json_cmd(doc) == (0, "", "")
    assert set(nft.tables) == {("bridge", TABLE), ("inet", TABLE)}


def test_a_nic_chain_tries_its_groups_in_order_then_its_default() -> None:
    inet = table(compile_ruleset(host(WEB, APP, DB)), "inet")
    web_in = chain(inet, "nic_tap-web_in").rules
    assert web_in[0] == (
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
        {"accept": None},
    )
    tcp_not_syn = web_in[3]
    assert tcp_not_syn[0] == {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 6}}
    assert tcp_not_syn[-1] == {"drop": None}
    assert [r[0] for r in web_in[4:6]] == [
        {"jump": {"target": "sg_web_in"}},
        {"jump": {"target": "sg_ops_in"}},
    ]
    counting = ({"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": "@default_hits"}},)
    assert web_in[-2:] == (counting, ({"drop": None},))
    web_out = chain(inet, "nic_tap-web_out").rules
    assert web_out[0] == ({"jump": {"target": "egress_guard"}},)
    assert web_out[-2:] == (counting, ({"accept": None},))
    assert chain(inet, "nic_tap-db_in").rules[-1][-1] == {"accept": None}
    assert chain(inet, "nic_tap-db_out").rules[-1][-1] == {"drop": None}


def test_only_groups_in_use_are_compiled_with_the_member_sets_they_need() -> None:
    c = compile_ruleset(host(APP))
    inet = table(c, "inet")
    assert {ch.name for ch in inet.chains if ch.name.startswith("sg_")} == {
        "sg_app_in",
        "sg_app_out",
        "sg_ops_in",
        "sg_ops_out",
    }
    assert {s.name for s in inet.sets if s.name.startswith("members_")} == {
        "members_web_v4",
        "members_web_v6",
    }
    assert nft_set(inet, "members_web_v4").elements == ()  # no web NIC anywhere yet


def test_counters_say_what_they_count() -> None:
    c = compile_ruleset(host(WEB, DB))
    refs = set(c.counters.values())
    assert RuleRef(group="web", priority=1, direction=Direction.INGRESS) in refs
    assert DefaultRef(port="tap-db", direction=Direction.EGRESS) in refs
    inet = table(c, "inet")
    counting = {s.name: s for s in inet.sets if s.counters}
    assert set(counting) == {name for name, _ in c.counter_elements}
    # every counting element is known, and nothing else is
    listed = {(s.name, canonical(e)) for s in counting.values() for e in s.elements}
    assert listed == set(c.counter_elements)
    assert set(c.counter_elements.values()) == set(c.counters)
    marks = c.marks
    assert c.counters[
        c.counter_elements[("default_hits", ((FROM_TAG | marks["tap-db"],) * 2,))]
    ] == DefaultRef(port="tap-db", direction=Direction.EGRESS)


def test_the_ruleset_size_follows_nics_and_groups_not_rules() -> None:
    def size(rules_per_group: int) -> tuple[int, int, int]:
        c = compile_ruleset(synthetic(nics=200, groups=20, rules_per_group=rules_per_group))
        inet = table(c, "inet")
        elements = sum(len(s.elements) for s in inet.sets if s.name.startswith("sg_"))
        return len(inet.chains), sum(len(ch.rules) for ch in inet.chains), elements

    small, large = size(10), size(500)
    assert small[:2] == large[:2]
    builtin = 20 * 4  # each group's built-in rule: in/out, v4/v6
    assert (small[2], large[2]) == (20 * 10 + builtin, 20 * 500 + builtin)


def test_membership_changes_only_change_set_elements() -> None:
    compiler = Compiler()
    before = compiler.compile(host(WEB, APP))
    after = compiler.compile(
        replace(host(WEB, APP), members=membership([WEB, APP, replace(WEB, ipv4=("10.9.9.9",))]))
    )
    commands = diff_transaction(before.ruleset, after.ruleset)
    assert commands == [
        {
            "add": {
                "element": {"family": "inet", "table": TABLE, "name": "members_web_v4", "elem": ["10.9.9.9"]}
            }
        }
    ]


def test_a_rule_change_touches_its_group_only() -> None:
    compiler = Compiler()
    desired = host(WEB, APP, DB)
    before = compiler.compile(desired)
    groups = dict(desired.groups)
    groups["ops"] = groups["ops"].add_rule(tcp_in(2222), known_groups=set(groups))
    after = compiler.compile(replace(desired, groups=groups))
    commands = diff_transaction(before.ruleset, after.ruleset)
    ref = {"family": "inet", "table": TABLE}
    (lookup,) = [s for s in table(after, "inet").sets if s.name.startswith("sg_ops_in_")]
    element = {"concat": [{"prefix": {"addr": "0.0.0.0", "len": 0}}, 6, 2222]}
    # 2222 from anywhere joins the lookup of 22 from anywhere: not even the chain changes
    assert commands == [{"add": {"element": {**ref, "name": lookup.name, "elem": [element]}}}]
    counter = after.counter_elements[(lookup.name, canonical(element))]
    assert after.counters[counter] == RuleRef(group="ops", priority=1, direction=Direction.INGRESS)
    groups["ops"] = groups["ops"].insert_rule(0, tcp_in(23, remote_group="web"), known_groups=set(groups))
    commands = (
        diff_transaction(after.ruleset, compiler.compile(replace(desired, groups=groups)).ruleset) or []
    )
    rules = [c["add"]["rule"]["chain"] for c in commands if "rule" in c.get("add", {})]
    assert set(rules) == {"sg_ops_in"}
    assert {"flush": {"chain": {**ref, "name": "sg_ops_in"}}} in commands


def test_port_marks_stay_stable_and_freed_ones_are_reused() -> None:
    first = compile_ruleset(host(WEB, APP, DB))
    without_app = compile_ruleset(host(WEB, DB), previous=first)
    assert without_app.marks == {"tap-web": first.marks["tap-web"], "tap-db": first.marks["tap-db"]}
    newcomer = replace(APP, port="tap-new")
    again = compile_ruleset(host(WEB, DB, newcomer), previous=without_app)
    assert again.marks["tap-new"] == first.marks["tap-app"]


def test_unchanged_input_compiles_to_the_same_objects() -> None:
    compiler = Compiler()
    desired = synthetic(nics=50, groups=5, rules_per_group=20)
    a, b = compiler.compile(desired), compiler.compile(desired)
    assert diff_transaction(a.ruleset, b.ruleset) == []


@pytest.mark.parametrize(
    ("nic", "field", "text"),
    [
        (replace(WEB, port="a-very-long-tap-name"), "nics[0].port", "is not an interface name"),
        (replace(WEB, bridge="br 0"), "nics[0].bridge", "is not an interface name"),
        (replace(WEB, mac="52:54:00:00:00"), "nics[0].mac", "is not a MAC address"),
        (replace(WEB, ipv4=("10.0.0.256",)), "nics[0].ipv4[0]", "is not an IPv4 address"),
        (replace(WEB, ipv6=("10.0.0.1",)), "nics[0].ipv6[0]", "is not an IPv6 address"),
        (replace(WEB, groups=("web", "nope")), "nics[0].groups[1]", "'nope', which is not given"),
    ],
)
def test_bad_nics_are_refused_naming_the_field(nic: HostNic, field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        compile_ruleset(host(nic))
    assert e.value.field == field and text in e.value.message


def test_a_port_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument) as e:
        compile_ruleset(host(WEB, replace(APP, port=WEB.port)))
    assert e.value.field == "nics[1].port"


def test_members_of_groups_nobody_references_are_ignored() -> None:
    desired = replace(host(DB), members={"web": GroupMembers(ipv4=frozenset({"1.2.3.4"}))})
    inet = table(compile_ruleset(desired), "inet")
    assert {s.name for s in inet.sets if s.name.startswith("members_")} == {
        "members_app_v4",
        "members_app_v6",
    }
