"""The uplink guard's nftables commands."""

from __future__ import annotations

import json
from typing import Any

from zsd.network.dhcp.guard import delete_commands, guard_commands, owned, table_name


def _rules(commands: list[dict[str, Any]], chain: str) -> list[list[dict[str, Any]]]:
    return [
        c["add"]["rule"]["expr"]
        for c in commands
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def test_table_replaced_whole_in_one_transaction() -> None:
    commands = guard_commands(bridge="br0", uplink="up0")
    table = {"family": "bridge", "name": "zsd-dhcp-br0"}
    # add + delete + add: replaces the table whether or not it exists.
    assert commands[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    (hook,) = [
        c["add"]["chain"] for c in commands if "chain" in c.get("add", {}) and "hook" in c["add"]["chain"]
    ]
    assert (hook["hook"], hook["type"], hook["policy"]) == ("forward", "filter", "accept")


def test_both_directions_of_the_uplink_are_guarded() -> None:
    forward = _rules(guard_commands(bridge="br0", uplink="up0"), "forward")
    keys = sorted(r[0]["match"]["left"]["meta"]["key"] for r in forward)
    assert keys == ["iifname", "oifname"]
    assert all(r[0]["match"]["right"] == "up0" and r[1] == {"jump": {"target": "uplink"}} for r in forward)


def test_dhcp_dhcpv6_and_router_advertisements_are_dropped() -> None:
    uplink = _rules(guard_commands(bridge="br0", uplink="up0"), "uplink")
    text = json.dumps(uplink)
    assert '"set": [67, 68]' in text and '"set": [546, 547]' in text and "nd-router-advert" in text
    assert all(rule[-1] == {"drop": None} and {"counter": None} in rule for rule in uplink)


def test_names_and_removal() -> None:
    assert table_name("zb0123456789") == "zsd-dhcp-zb0123456789"
    assert owned("zsd-dhcp-x") and not owned("zsd-secgroups")
    assert delete_commands("zsd-dhcp-x") == [
        {"add": {"table": {"family": "bridge", "name": "zsd-dhcp-x"}}},
        {"delete": {"table": {"family": "bridge", "name": "zsd-dhcp-x"}}},
    ]


def test_the_service_port_and_the_uplink_never_meet() -> None:
    forward = _rules(guard_commands(bridge="br0", uplink="up0", service_port="zd0123456789"), "forward")
    isolation = [r for r in forward if r[-1] == {"drop": None}]
    pairs = [(r[0]["match"]["right"], r[1]["match"]["right"]) for r in isolation]
    assert pairs == [("zd0123456789", "up0"), ("up0", "zd0123456789")]
    assert all(r[0]["match"]["left"] == {"meta": {"key": "iifname"}} for r in isolation)
    # Without a service port, only the DHCP/RA rules of the uplink chain drop anything.
    plain = _rules(guard_commands(bridge="br0", uplink="up0"), "forward")
    assert not [r for r in plain if {"drop": None} in r]
