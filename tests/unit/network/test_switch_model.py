"""Switch and port group checks: every bad request names its field and says what is allowed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zsd.errors import InvalidArgument
from zsd.network import records
from zsd.network.model import PortGroup, Subnet, Switch, link_name, validate_port_group, validate_switch

VXLAN = Switch(name="lab", kind="vxlan", uplink="eth0")
VLAN = Switch(
    name="dc", kind="vlan", uplink="bond0", host_uplinks=(("h2", "eth1"),), mtu=9000, hosts=("h1", "h2")
)
WEB = PortGroup(
    switch="lab",
    name="web",
    vni=100,
    subnets=(
        Subnet(cidr="10.0.0.0/24", gateway="10.0.0.1", allocation_ranges=(("10.0.0.10", "10.0.0.99"),)),
        Subnet(cidr="2001:db8:1::/64", gateway="2001:db8:1::1"),
    ),
    dns_servers=("10.0.0.1", "2001:db8:1::1"),
    domain="web.lab.example",
    dhcp=True,
)
S0 = "port_group.subnets[0]"


def subnets(*items: Subnet) -> PortGroup:
    return replace(WEB, subnets=items)


def test_good_switches_and_port_groups_pass() -> None:
    assert validate_switch(VXLAN) == VXLAN
    assert validate_switch(VLAN) == VLAN
    assert validate_port_group(WEB, VXLAN) == WEB
    assert validate_port_group(PortGroup(switch="dc", name="v7", vlan_id=7), VLAN).vlan_id == 7
    assert VLAN.uplink_on("h2") == "eth1" and VLAN.uplink_on("h1") == "bond0"
    assert VLAN.spans("h1") and not VLAN.spans("h3") and VXLAN.spans("anything")


@pytest.mark.parametrize(
    ("switch", "field", "says"),
    [
        (replace(VXLAN, name="Lab!"), "switch_id", "not a valid name"),
        (replace(VXLAN, kind="gre"), "switch.kind", "vlan, vxlan"),
        (replace(VXLAN, uplink=""), "switch.uplink", "interface name"),
        (replace(VXLAN, uplink="a-very-long-interface"), "switch.uplink", "1-15"),
        (replace(VXLAN, mtu=100), "switch.mtu", "576..9000"),
        (replace(VXLAN, mtu=9001), "switch.mtu", "576..9000"),
        (replace(VXLAN, hosts=("h1", "h1")), "switch.hosts", "twice"),
        (replace(VXLAN, host_uplinks=(("h1", "x y"),)), "switch.host_uplinks[h1]", "interface name"),
    ],
)
def test_bad_switches(switch: Switch, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_switch(switch)
    assert e.value.field == field and says in e.value.message


@pytest.mark.parametrize(
    ("pg", "switch", "field", "says"),
    [
        (replace(WEB, vni=0), VXLAN, "port_group.vni", "1..16777215"),
        (replace(WEB, vni=16_777_216), VXLAN, "port_group.vni", "1..16777215"),
        (replace(WEB, vlan_id=5), VXLAN, "port_group.vlan_id", "VXLAN switch"),
        (PortGroup(switch="dc", name="v", vlan_id=0), VLAN, "port_group.vlan_id", "1..4094"),
        (PortGroup(switch="dc", name="v", vlan_id=4095), VLAN, "port_group.vlan_id", "1..4094"),
        (PortGroup(switch="dc", name="v", vlan_id=5, vni=5), VLAN, "port_group.vni", "VLAN switch"),
        (subnets(Subnet(cidr="10.0.0.1/24")), VXLAN, S0 + ".cidr", "host bits"),
        (subnets(Subnet(cidr="10.0.0.0/31")), VXLAN, S0 + ".cidr", "too small"),
        (subnets(Subnet(cidr="10.0.0.0/24", gateway="10.0.1.1")), VXLAN, S0 + ".gateway", "outside"),
        (subnets(Subnet(cidr="10.0.0.0/24", gateway="10.0.0.255")), VXLAN, S0 + ".gateway", "broadcast"),
        (
            subnets(Subnet(cidr="10.0.0.0/16"), Subnet(cidr="10.0.5.0/24")),
            VXLAN,
            "port_group.subnets[1].cidr",
            "overlaps subnet 0",
        ),
        (
            subnets(Subnet(cidr="10.0.0.0/24", allocation_ranges=(("10.0.0.50", "10.0.0.9"),))),
            VXLAN,
            S0 + ".allocation_ranges[0]",
            "ends before it starts",
        ),
        (
            subnets(Subnet(cidr="10.0.0.0/24", allocation_ranges=(("10.0.0.5", "10.0.1.9"),))),
            VXLAN,
            S0 + ".allocation_ranges[0]",
            "not inside",
        ),
        (replace(WEB, dns_servers=("dns.example",)), VXLAN, "port_group.dns_servers[0]", "not an IPv4"),
        (replace(WEB, domain="Bad_Domain"), VXLAN, "port_group.domain", "not a DNS domain"),
        (subnets(), VXLAN, "port_group.dhcp", "at least one subnet"),
    ],
)
def test_bad_port_groups(pg: PortGroup, switch: Switch, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_port_group(pg, switch)
    assert e.value.field == field, e.value.message
    assert says in e.value.message


def test_link_names_fit_the_kernel_and_are_the_same_everywhere() -> None:
    assert WEB.bridge == link_name("zb", "lab/web") and len(WEB.bridge) == 12
    assert {WEB.bridge[2:], WEB.vxlan_link[2:], WEB.vlan_link[2:]} == {WEB.bridge[2:]}
    assert replace(WEB, name="db").bridge != WEB.bridge


def test_records_round_trip() -> None:
    assert records.decode_switch(records.encode_switch(VLAN)) == VLAN
    assert records.decode_port_group(records.encode_port_group(WEB)) == WEB
