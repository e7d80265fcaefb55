"""A host's links for the cluster's switches: bridges per port group, the uplink's VLAN
sub-interface or a VXLAN device flooding to every other host carrying the switch."""

from __future__ import annotations

from zsd.network.fabric import FLOOD_MAC, FdbEntry, LinkSpec, TapPort, owned, plan
from zsd.network.model import PortGroup, Switch

MEMBERS = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3"}
VXLAN = Switch(name="lab", kind="vxlan", uplink="eth0", mtu=1450)
VLAN = Switch(name="dc", kind="vlan", uplink="bond0", host_uplinks=(("h2", "eth1"),), hosts=("h1", "h2"))
WEB = PortGroup(switch="lab", name="web", vni=100)
V7 = PortGroup(switch="dc", name="v7", vlan_id=7)


def test_vxlan_port_group_on_every_host_floods_to_the_others() -> None:
    fabric = plan(host="h1", address="192.0.2.1", switches=[VXLAN], port_groups=[WEB], members=MEMBERS)
    assert fabric.links == (
        LinkSpec(name=WEB.bridge, kind="bridge", mtu=1450),
        LinkSpec(
            name=WEB.vxlan_link,
            kind="vxlan",
            master=WEB.bridge,
            parent="eth0",
            segment=100,
            local="192.0.2.1",
            mtu=1450,
        ),
    )
    assert fabric.fdb == (
        FdbEntry(link=WEB.vxlan_link, mac=FLOOD_MAC, dst="192.0.2.2"),
        FdbEntry(link=WEB.vxlan_link, mac=FLOOD_MAC, dst="192.0.2.3"),
    )
    assert fabric.bridges() == (WEB.bridge,)


def test_vlan_port_group_only_on_the_switchs_hosts_with_their_uplink() -> None:
    on_h2 = plan(host="h2", address="192.0.2.2", switches=[VLAN], port_groups=[V7], members=MEMBERS)
    assert on_h2.links[1] == LinkSpec(
        name=V7.vlan_link, kind="vlan", master=V7.bridge, parent="eth1", segment=7
    )
    assert on_h2.fdb == ()
    assert (
        plan(host="h3", address="192.0.2.3", switches=[VLAN], port_groups=[V7], members=MEMBERS).links == ()
    )


def test_a_vxlan_switch_on_some_hosts_floods_only_to_them() -> None:
    two = Switch(name="lab", kind="vxlan", uplink="eth0", hosts=("h1", "h3"))
    fabric = plan(host="h3", address="192.0.2.3", switches=[two], port_groups=[WEB], members=MEMBERS)
    assert [e.dst for e in fabric.fdb] == ["192.0.2.1"]


def test_port_groups_of_unknown_switches_are_ignored_and_order_is_stable() -> None:
    orphan = PortGroup(switch="gone", name="x", vni=5)
    db = PortGroup(switch="lab", name="db", vni=200)
    fabric = plan(host="h1", address="192.0.2.1", switches=[VXLAN], port_groups=[WEB, orphan, db], members={})
    assert [link.name for link in fabric.links] == [db.bridge, db.vxlan_link, WEB.bridge, WEB.vxlan_link]
    assert fabric.fdb == ()


def test_zsd_owns_only_its_own_link_names() -> None:
    assert owned(WEB.bridge) and owned(WEB.vxlan_link) and owned(V7.vlan_link)
    assert not owned("zbr0") and not owned("eth0") and not owned("zx")


def test_nics_on_other_hosts_get_static_entries_that_follow_them() -> None:
    vlan_pg = V7.key
    locations = [
        (WEB.key, "02:00:00:00:00:01", "h1"),  # here: the bridge learns it locally
        (WEB.key, "02:00:00:00:00:02", "h2"),
        (WEB.key, "02:00:00:00:00:03", "gone"),  # a host no longer a member: no entry
        (vlan_pg, "02:00:00:00:00:04", "h2"),  # VLAN: the physical switch learns
    ]
    fabric = plan(
        host="h1", address="192.0.2.1", switches=[VXLAN, VLAN], port_groups=[WEB, V7],
        members=MEMBERS, nic_locations=locations,
    )  # fmt: skip
    static = [e for e in fabric.fdb if e.mac != FLOOD_MAC]
    assert static == [FdbEntry(link=WEB.vxlan_link, mac="02:00:00:00:00:02", dst="192.0.2.2")]
    # The NIC here: its VM's tap belongs on the port group's bridge (VLAN or VXLAN).
    assert fabric.taps == (TapPort(name="zt0000000001", bridge=WEB.bridge),)
    h2 = plan(
        host="h2", address="192.0.2.2", switches=[VXLAN, VLAN], port_groups=[WEB, V7],
        members=MEMBERS, nic_locations=locations,
    )  # fmt: skip
    assert set(h2.taps) == {
        TapPort(name="zt0000000002", bridge=WEB.bridge), TapPort(name="zt0000000004", bridge=V7.bridge),
    }  # fmt: skip
    moved = [(WEB.key, "02:00:00:00:00:02", "h3")]
    again = plan(
        host="h1",
        address="192.0.2.1",
        switches=[VXLAN],
        port_groups=[WEB],
        members=MEMBERS,
        nic_locations=moved,
    )
    assert [e.dst for e in again.fdb if e.mac != FLOOD_MAC] == ["192.0.2.3"]
