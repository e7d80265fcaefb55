"""Which DHCP scopes a host serves: port groups with DHCP its switches bring there, the
NICs of VMs running on it, and the port group's other NICs as DNS names only."""

from __future__ import annotations

from zsd.compute.records import VmRecord
from zsd.network.dhcp.spec import DhcpNic, DnsRecord, Ipv4Subnet, Ipv6Subnet
from zsd.network.dhcpsync import scopes
from zsd.network.model import PortGroup, Subnet, Switch
from zsd.network.nics import NicRecord

LAB = Switch(name="lab", kind="vxlan", uplink="eth0", mtu=1450)
EDGE = Switch(name="edge", kind="vlan", uplink="eth1", hosts=("h2",))
WEB = PortGroup(
    switch="lab",
    name="web",
    vni=100,
    subnets=(Subnet(cidr="10.0.0.0/24", gateway="10.0.0.1"), Subnet(cidr="2001:db8::/64")),
    dns_servers=("10.0.0.254",),
    domain="web.lab",
    dhcp=True,
)
QUIET = PortGroup(switch="lab", name="quiet", vni=200, subnets=(Subnet(cidr="10.1.0.0/24"),))
FAR = PortGroup(switch="edge", name="far", vlan_id=7, subnets=(Subnet(cidr="10.2.0.0/24"),), dhcp=True)


def nic(name: str, last: str, *addresses: str) -> NicRecord:
    return NicRecord(name=name, port_group="lab/web", mac=f"02:00:00:00:00:{last}", addresses=addresses)


NICS = [
    NicRecord(
        name="a0", port_group="lab/web", mac="02:00:00:00:00:0a", addresses=("10.0.0.2", "2001:db8::2")
    ),
    NicRecord(
        name="b0", port_group="lab/web", mac="02:00:00:00:00:0b", addresses=("10.0.0.3", "2001:db8::3")
    ),
    NicRecord(
        name="c0", port_group="lab/web", mac="02:00:00:00:00:0c", addresses=("10.0.0.4", "2001:db8::4")
    ),
    nic(
        "free",
        "0f",
        "10.0.0.5",
    ),
]
VMS = [
    VmRecord(name="web-a", uid="1", host="h1", vcpus=1, memory_mib=64, nics=("a0",)),
    VmRecord(name="web_b", uid="2", host="h1", vcpus=1, memory_mib=64, nics=("b0",)),
    VmRecord(name="web-c", uid="3", host="h2", vcpus=1, memory_mib=64, nics=("c0",)),
]


def test_a_host_serves_its_own_nics_and_names_the_others() -> None:
    (scope,) = scopes(host="h1", switches=[LAB, EDGE], port_groups=[WEB, QUIET, FAR], nics=NICS, vms=VMS)
    assert (scope.port_group, scope.bridge, scope.uplink, scope.mtu) == (
        "lab/web",
        WEB.bridge,
        WEB.vxlan_link,
        1450,
    )
    assert scope.ipv4 == Ipv4Subnet(cidr="10.0.0.0/24", gateway="10.0.0.1")
    assert scope.ipv6 == Ipv6Subnet(cidr="2001:db8::/64")
    assert (scope.dns_servers, scope.domain) == (("10.0.0.254",), "web.lab")
    assert scope.nics == (
        DhcpNic(mac="02:00:00:00:00:0a", ipv4="10.0.0.2", ipv6="2001:db8::2", hostname="web-a"),
        # web_b is no DNS label: served, not named.
        DhcpNic(mac="02:00:00:00:00:0b", ipv4="10.0.0.3", ipv6="2001:db8::3"),
    )
    assert scope.dns_records == (DnsRecord(hostname="web-c", ipv4="10.0.0.4", ipv6="2001:db8::4"),)


def test_the_vlan_switch_only_where_it_runs_and_a_migrated_vm_moves_its_lease() -> None:
    on_h2 = scopes(host="h2", switches=[LAB, EDGE], port_groups=[WEB, FAR], nics=NICS, vms=VMS)
    assert [s.port_group for s in on_h2] == ["edge/far", "lab/web"]
    assert on_h2[0].uplink == FAR.vlan_link and on_h2[0].nics == ()
    assert [n.mac for n in on_h2[1].nics] == ["02:00:00:00:00:0c"]
    moved = [VmRecord(name="web-a", uid="1", host="h2", vcpus=1, memory_mib=64, nics=("a0",))]
    (web,) = scopes(host="h2", switches=[LAB], port_groups=[WEB], nics=NICS, vms=moved)
    assert [n.mac for n in web.nics] == ["02:00:00:00:00:0a"]
