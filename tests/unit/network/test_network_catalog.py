"""The leader's writes of switches and port groups against a real cluster.db and the
leader's own state copy: names, segment ids, users of what is deleted, retries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.compute.test_leader_placement import Cluster
from zsd.compute.records import VmRecord
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.network.catalog import NetworkCatalog
from zsd.network.model import PortGroup, Subnet, Switch
from zsd.network.nics import NicRecord

LAB = Switch(name="lab", kind="vxlan", uplink="eth0")
DC = Switch(name="dc", kind="vlan", uplink="bond0")
OTHER_DC = Switch(name="dc2", kind="vlan", uplink="eth9")
WEB = PortGroup(switch="lab", name="web", vni=100, subnets=(Subnet(cidr="10.0.0.0/24"),))


def nic(name: str, port_group: str, mac: str = "") -> NicRecord:
    return NicRecord(name=name, port_group=port_group, mac=mac)


async def test_switches_and_port_groups_are_stored_and_read_back(cluster: Cluster) -> None:
    catalog = NetworkCatalog(cluster.control, clock=lambda: 1234.0)
    stored, _ = await catalog.create_switch(LAB, request_id="r1")
    assert stored == replace(LAB, create_time=1234.0)
    again, _ = await catalog.create_switch(LAB, request_id="r1")  # a retry: the first answer
    assert again == stored
    with pytest.raises(AlreadyExists) as taken:
        await catalog.create_switch(LAB, request_id="r2")
    assert taken.value.field == "switch_id"
    pg, _ = await catalog.create_port_group(WEB, request_id="r3")
    assert catalog.port_groups("lab") == [pg] and catalog.port_group("lab", "web") == pg
    assert catalog.switches() == [stored]


async def test_segments_are_unique_where_the_kernel_needs_them(cluster: Cluster) -> None:
    catalog = NetworkCatalog(cluster.control)
    for i, switch in enumerate((LAB, DC, OTHER_DC)):
        await catalog.create_switch(switch, request_id=f"s{i}")
    await catalog.create_port_group(WEB, request_id="p1")
    await catalog.create_port_group(PortGroup(switch="dc", name="v7", vlan_id=7), request_id="p2")
    # VNIs are the cluster's; VLAN ids one uplink's.
    with pytest.raises(AlreadyExists) as vni:
        await catalog.create_port_group(replace(WEB, name="web2"), request_id="p3")
    assert (vni.value.reason, vni.value.field) == ("SEGMENT_TAKEN", "port_group.vni")
    assert "switches/lab/portGroups/web" in vni.value.message
    with pytest.raises(AlreadyExists) as vlan:
        await catalog.create_port_group(PortGroup(switch="dc", name="again", vlan_id=7), request_id="p4")
    assert vlan.value.field == "port_group.vlan_id"
    await catalog.create_port_group(PortGroup(switch="dc2", name="v7", vlan_id=7), request_id="p5")
    # Checks of the switch it belongs to, and of the request itself.
    with pytest.raises(NotFound) as parent:
        await catalog.create_port_group(replace(WEB, switch="nope"), request_id="p6")
    assert (parent.value.field, parent.value.reason) == ("parent", "SWITCH_NOT_FOUND")
    with pytest.raises(InvalidArgument) as bad:
        await catalog.create_port_group(PortGroup(switch="dc", name="x", vni=5), request_id="p7")
    assert bad.value.field == "port_group.vni"


async def test_what_is_in_use_is_not_deleted(cluster: Cluster) -> None:
    users = {"lab/web": ["nics/web1-0", "nics/web2-0"]}
    catalog = NetworkCatalog(cluster.control, users=lambda pg: users.get(pg.key, []))
    await catalog.create_switch(LAB, request_id="s")
    await catalog.create_port_group(WEB, request_id="p")
    with pytest.raises(FailedPrecondition) as switch_used:
        await catalog.delete_switch("lab", request_id="d1")
    assert (
        switch_used.value.reason == "SWITCH_IN_USE"
        and "switches/lab/portGroups/web" in switch_used.value.message
    )
    with pytest.raises(FailedPrecondition) as pg_used:
        await catalog.delete_port_group("lab", "web", request_id="d2")
    assert pg_used.value.reason == "PORT_GROUP_IN_USE"
    assert "nics/web1-0, nics/web2-0" in pg_used.value.message
    users.clear()
    await catalog.delete_port_group("lab", "web", request_id="d3")
    await catalog.delete_port_group("lab", "web", request_id="d3")  # a retry
    await catalog.delete_switch("lab", request_id="d4")
    assert catalog.switches() == [] and catalog.port_groups() == []
    with pytest.raises(NotFound):
        await catalog.delete_switch("lab", request_id="d5")


async def test_nics_get_unique_macs_and_addresses_and_follow_their_vm(cluster: Cluster) -> None:
    catalog = NetworkCatalog(cluster.control)
    await catalog.create_switch(LAB, request_id="s")
    await catalog.create_port_group(WEB, request_id="p")
    a, _ = await catalog.create_nic(
        NicRecord(name="a", port_group="lab/web", mac=""), ip_addresses=[], request_id="n1"
    )
    b, _ = await catalog.create_nic(
        NicRecord(name="b", port_group="lab/web", mac=""), ip_addresses=[], request_id="n2"
    )
    assert a.mac != b.mac and int(a.mac[:2], 16) & 2
    assert (a.addresses, b.addresses) == (("10.0.0.1",), ("10.0.0.2",))
    with pytest.raises(AlreadyExists) as taken:
        await catalog.create_nic(
            NicRecord(name="c", port_group="lab/web", mac=""), ip_addresses=["10.0.0.2"], request_id="n3"
        )
    assert (taken.value.reason, taken.value.field) == ("ADDRESS_TAKEN", "nic.ip_addresses[0]")
    assert "nics/b" in taken.value.message
    with pytest.raises(AlreadyExists) as mac:
        await catalog.create_nic(
            NicRecord(name="c", port_group="lab/web", mac=a.mac), ip_addresses=[], request_id="n4"
        )
    assert mac.value.reason == "MAC_TAKEN"
    with pytest.raises(NotFound) as pg:
        await catalog.create_nic(
            NicRecord(name="c", port_group="lab/nope", mac=""), ip_addresses=[], request_id="n5"
        )
    assert pg.value.field == "nic.port_group"
    # The port group is in use while it has NICs; a NIC while a VM record lists it.
    with pytest.raises(FailedPrecondition) as used:
        await catalog.delete_port_group("lab", "web", request_id="d1")
    assert "nics/a, nics/b" in used.value.message
    await cluster.vm(VmRecord(name="vm1", uid="u1", host="h1", vcpus=1, memory_mib=64, nics=("a",)))
    assert catalog.nic_users()["a"].name == "vm1"
    with pytest.raises(FailedPrecondition) as nic_used:
        await catalog.delete_nic("a", request_id="d2")
    assert nic_used.value.reason == "NIC_IN_USE" and "vms/vm1" in nic_used.value.message
    await catalog.delete_nic("b", request_id="d3")
    assert [n.name for n in catalog.nics()] == ["a"]
