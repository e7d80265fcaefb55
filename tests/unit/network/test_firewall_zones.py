"""The host firewall puts each NIC on its port group's bridge (so its connections
get that port group's conntrack zone), and a host with no VM NIC leaves conntrack
alone."""

from __future__ import annotations

from pathlib import Path

import trio

from zsd.compute.records import VmRecord
from zsd.network.firewall import FirewallReconciler, host_firewall
from zsd.network.model import PortGroup
from zsd.network.nics import NicRecord
from zsd.network.secgroups.compiler import compile_ruleset
from zsd.network.secgroups.revocation import ConntrackTable


def test_each_nic_is_on_its_port_groups_bridge_and_zone() -> None:
    nics = [
        NicRecord(name="a", port_group="lab/p", mac="02:00:00:00:00:0a", addresses=("10.0.0.2",)),
        NicRecord(name="b", port_group="lab/q", mac="02:00:00:00:00:0b", addresses=("10.0.0.2",)),
    ]
    vms = [VmRecord(name="v1", uid="1", host="h1", vcpus=1, memory_mib=1, nics=("a", "b"))]
    fw = host_firewall(host="h1", nics=nics, vms=vms, groups={})
    p, q = PortGroup(switch="lab", name="p"), PortGroup(switch="lab", name="q")
    assert [n.bridge for n in fw.nics] == [p.bridge, q.bridge]
    zones = compile_ruleset(fw).zones
    assert set(zones) == {p.bridge, q.bridge} and zones[p.bridge] != zones[q.bridge]


def test_a_host_without_vm_nics_opens_no_conntrack_table(tmp_path: Path) -> None:
    def refuse() -> ConntrackTable:
        raise AssertionError("conntrack opened")

    reconciler = FirewallReconciler(control=None, host="h1", procfs=tmp_path, conntrack=refuse)  # type: ignore[arg-type]
    reconciler._apply(host_firewall(host="h1", nics=[], vms=[], groups={}))
    assert trio.run(reconciler.sweep) is None
