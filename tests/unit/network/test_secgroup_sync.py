"""Security groups as the cluster stores them and as each host enforces them: the
records, the API's rule conversion (errors name the request field), the leader's
writes, and the firewall a host compiles from the state."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.compute.test_leader_placement import Cluster
from zsd.api import networkconv
from zsd.compute.designer import tap_name
from zsd.compute.records import VmRecord
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.network.catalog import NetworkCatalog
from zsd.network.firewall import FirewallReconciler, host_firewall
from zsd.network.model import PortGroup, Subnet, Switch
from zsd.network.nics import NicRecord
from zsd.network.secgroups.group import new_group
from zsd.network.secgroups.rules import Action, Direction, PortRange, Protocol, RuleSpec
from zsd.network.secrecords import GroupRecord
from zsd.v1 import network_pb2

HTTP = RuleSpec(direction=Direction.INGRESS, protocol=Protocol.TCP, port_range=PortRange.single(80))


def test_records_keep_rules_order_and_the_members_rule() -> None:
    group = new_group("web", [HTTP], known_groups={"web"}, allow_members=False, description="front")
    record = GroupRecord(group=group, create_time=5.0)
    assert GroupRecord.decode(record.encode()) == record


def test_api_rules_are_checked_naming_the_request_field() -> None:
    rule = network_pb2.SecurityGroupRule(direction="ingress", protocol="icmp", port_min=80, port_max=80)
    with pytest.raises(InvalidArgument) as one:
        networkconv.rule_specs([rule], known_groups=set(), field="rule")
    assert one.value.field == "rule.port_range"
    bad = [rule, network_pb2.SecurityGroupRule(direction="ingress", remote_group="securityGroups/nope")]
    with pytest.raises(InvalidArgument) as many:
        networkconv.rule_specs(bad, known_groups=set())
    assert many.value.field == "rules" and "rules[0].port_range" in many.value.message
    assert "rules[1].remote_group" in many.value.message
    (spec,) = networkconv.rule_specs(
        [network_pb2.SecurityGroupRule(direction="ingress", protocol="tcp", port_min=80, port_max=80)],
        known_groups=set(),
        field="rule",
    )
    assert spec == HTTP
    assert networkconv.rule_message(0, spec).port_min == 80


def test_a_host_enforces_the_nics_of_its_vms_with_cluster_wide_membership() -> None:
    web = new_group("web", [HTTP], known_groups={"web"})
    nics = [
        NicRecord(
            name="a",
            port_group="lab/p",
            mac="02:00:00:00:00:0a",
            addresses=("10.0.0.2",),
            security_groups=("web",),
        ),
        NicRecord(
            name="b",
            port_group="lab/p",
            mac="02:00:00:00:00:0b",
            addresses=("10.0.0.3",),
            security_groups=("web",),
            ingress_default="allow",
        ),
        NicRecord(name="idle", port_group="lab/p", mac="02:00:00:00:00:0c", addresses=("10.0.0.4",)),
    ]
    vms = [
        VmRecord(name="v1", uid="1", host="h1", vcpus=1, memory_mib=1, nics=("a",)),
        VmRecord(name="v2", uid="2", host="h2", vcpus=1, memory_mib=1, nics=("b",)),
    ]
    fw = host_firewall(host="h1", nics=nics, vms=vms, groups={"web": web})
    (nic,) = fw.nics
    assert (nic.port, nic.mac, nic.ipv4, nic.groups) == (
        tap_name("02:00:00:00:00:0a"),
        "02:00:00:00:00:0a",
        ("10.0.0.2",),
        ("web",),
    )
    assert (nic.ingress_default, nic.egress_default) == (Action.DENY, Action.ALLOW)
    assert fw.members["web"].ipv4 == frozenset({"10.0.0.2", "10.0.0.3"})
    on_h2 = host_firewall(host="h2", nics=nics, vms=vms, groups={"web": web})
    assert [n.ingress_default for n in on_h2.nics] == [Action.ALLOW]


async def test_leader_writes_of_groups_and_nic_attachments(cluster: Cluster) -> None:
    catalog = NetworkCatalog(cluster.control)
    await catalog.create_switch(Switch(name="lab", kind="vxlan", uplink="eth0"), request_id="s")
    await catalog.create_port_group(
        PortGroup(switch="lab", name="p", vni=1, subnets=(Subnet(cidr="10.0.0.0/24"),)), request_id="p"
    )
    await catalog.create_nic(NicRecord(name="a", port_group="lab/p", mac=""), ip_addresses=[], request_id="n")
    await catalog.create_security_group("ops", [], allow_members=True, description="", request_id="g1")
    ssh_from_ops = RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange.single(22),
        remote_group="ops",
    )
    app = await catalog.create_security_group(
        "app", [ssh_from_ops], allow_members=True, description="", request_id="g2"
    )
    assert app.group.remote_groups() == {"app", "ops"}  # its own, for the members rule
    with pytest.raises(AlreadyExists):
        await catalog.create_security_group("app", [], allow_members=True, description="", request_id="g3")
    # Insert first, then delete: priorities stay consecutive.
    changed = await catalog.change_security_group(
        "app", lambda g, known: g.insert_rule(0, HTTP, known_groups=known), what="Add", request_id="c1"
    )
    assert [r.spec for r in changed.group.rules] == [HTTP, ssh_from_ops]
    changed = await catalog.change_security_group(
        "app", lambda g, _k: g.delete_rule(0), what="Del", request_id="c2"
    )
    assert [(r.priority, r.spec) for r in changed.group.rules] == [(0, ssh_from_ops)]
    # NICs take groups in order; unknown groups and defaults are refused naming the field.
    nic = await catalog.update_nic(
        "a", security_groups=["app", "ops"], ingress_default="allow", request_id="u1"
    )
    assert (nic.security_groups, nic.ingress_default, nic.egress_default) == (
        ("app", "ops"),
        "allow",
        "allow",
    )
    with pytest.raises(NotFound) as unknown:
        await catalog.update_nic("a", security_groups=["nope"], request_id="u2")
    assert unknown.value.field == "nic.security_groups[0]"
    with pytest.raises(InvalidArgument) as policy:
        await catalog.update_nic("a", egress_default="maybe", request_id="u3")
    assert policy.value.field == "nic.egress_default"
    # In use (by a NIC, by another group's rule): not deleted.
    with pytest.raises(FailedPrecondition) as used:
        await catalog.delete_security_group("ops", request_id="d1")
    assert "nics/a" in used.value.message and "securityGroups/app" in used.value.message
    await catalog.update_nic("a", security_groups=[], request_id="u4")
    await catalog.delete_security_group("app", request_id="d2")
    await catalog.delete_security_group("ops", request_id="d3")
    assert catalog.security_groups() == []


def test_a_host_without_vm_nics_leaves_netfilter_alone(tmp_path: Path) -> None:
    reconciler = FirewallReconciler(control=None, host="h1", procfs=tmp_path)  # type: ignore[arg-type]
    reconciler._apply(host_firewall(host="h1", nics=[], vms=[], groups={}))
    # No /proc/sys/net/bridge here: enabling br_netfilter would have raised.
    assert list(tmp_path.iterdir()) == []
