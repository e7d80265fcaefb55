"""The leader's writes of switches and port groups against a real cluster.db and the
leader's own state copy: names, segment ids, users of what is deleted, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tests.unit.compute.test_leader_placement import Cluster, SlowStore
from zsd.cluster.store import ClusterDb
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.network.catalog import NetworkCatalog
from zsd.network.model import PortGroup, Subnet, Switch

LAB = Switch(name="lab", kind="vxlan", uplink="eth0")
DC = Switch(name="dc", kind="vlan", uplink="bond0")
OTHER_DC = Switch(name="dc2", kind="vlan", uplink="eth9")
WEB = PortGroup(switch="lab", name="web", vni=100, subnets=(Subnet(cidr="10.0.0.0/24"),))


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    store = SlowStore(ClusterDb.create(tmp_path / "cluster.db", epoch=1, owner="h0"))
    c = Cluster(store)
    await nursery.start(c.replica.run)
    yield c
    nursery.cancel_scope.cancel()
    await store.aclose()


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
