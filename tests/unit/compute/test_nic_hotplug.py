"""Network NICs hot-plugged into placed VMs, on a real cluster.db and the leader's own
state copy: the leader's claim and every refusal (each naming ``nic.nic`` and what is
allowed), the plug a VM's host refuses putting the claim back, detach freeing the NIC
(not deleting it), and every host's DHCP, firewall and VXLAN entries following a NIC
added to (and dropped from) an existing VM record."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.unit.compute.fakevmnics import FakeVmNics
from tests.unit.compute.test_leader_placement import U1, Cluster, demand
from zsd.cluster.records import KIND_HOST, HostEntry
from zsd.cluster.store import Update
from zsd.compute.designer import tap_name
from zsd.compute.nicclaims import Claim, NicClaims, plug_claimed, unplug_released
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import Scheduler
from zsd.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    ZsdError,
)
from zsd.network.catalog import NetworkCatalog
from zsd.network.dhcp.manager import DhcpManager
from zsd.network.dhcp.testing.fakes import FakeFirewall, FakeLinks, FakeProcesses
from zsd.network.dhcpsync import DhcpReconciler
from zsd.network.firewall import FirewallReconciler
from zsd.network.links import Links
from zsd.network.model import PortGroup, Subnet, Switch
from zsd.network.nics import NicRecord
from zsd.network.reconciler import FabricReconciler

LAB = Switch(name="lab", kind="vxlan", uplink="eth0", hosts=("h1", "h3"))
WEB = PortGroup(switch="lab", name="web", vni=100, subnets=(Subnet(cidr="10.0.0.0/24"),), dhcp=True)
ADDRESSES = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3"}


@dataclass(frozen=True, kw_only=True)
class Lab:
    claims: NicClaims
    catalog: NetworkCatalog
    scheduler: Scheduler
    a: NicRecord
    b: NicRecord


async def lab(cluster: Cluster) -> Lab:
    """Hosts h1..h3 (the switch spans h1 and h3), two free NICs on lab/web, VMs v1 and
    v2 on h1 and far on h2, none with a network NIC."""
    for name in ADDRESSES:
        await cluster.host(name)
    await cluster.commit(
        [
            Update(kind=KIND_HOST, name=n, data=HostEntry(name=n, host_id=i + 1, address=a).encode())
            for i, (n, a) in enumerate(ADDRESSES.items())
        ]
    )
    catalog = NetworkCatalog(cluster.control)
    await catalog.create_switch(LAB, request_id="s")
    await catalog.create_port_group(WEB, request_id="p")
    a, _ = await catalog.create_nic(
        NicRecord(name="a", port_group=WEB.key, mac=""), ip_addresses=(), request_id="a"
    )
    b, _ = await catalog.create_nic(
        NicRecord(name="b", port_group=WEB.key, mac=""), ip_addresses=(), request_id="b"
    )
    for name, host in (("v1", "h1"), ("v2", "h1"), ("far", "h2")):
        await cluster.vm(VmRecord(name=name, uid=f"uid-{name}", host=host, vcpus=1, memory_mib=512))
    scheduler = Scheduler(cluster.control)
    return Lab(claims=NicClaims(scheduler, catalog), catalog=catalog, scheduler=scheduler, a=a, b=b)


def user(catalog: NetworkCatalog, nic: str) -> str:
    record = catalog.nic_users().get(nic)
    return record.name if record is not None else ""


async def test_a_claim_lists_the_nic_in_the_vm_record(cluster: Cluster) -> None:
    net = await lab(cluster)
    claim = await net.claims.claim("v1", "a")
    assert (claim.new, claim.nic, claim.vm.nics) == (True, net.a, ("a",))
    assert cluster.records()["v1"].nics == ("a",) and user(net.catalog, "a") == "v1"
    assert cluster.control.revision >= claim.revision
    # Asked again (a retried attach): nothing written, the claim is not this call's.
    again = await net.claims.claim("v1", "a")
    assert (again.new, again.revision, again.vm.nics) == (False, claim.revision, ("a",))
    # A second NIC goes after the first.
    assert (await net.claims.claim("v1", "b")).vm.nics == ("a", "b")


async def test_a_nic_in_use_is_refused_naming_its_vm(cluster: Cluster) -> None:
    net = await lab(cluster)
    await net.claims.claim("v1", "a")
    with pytest.raises(FailedPrecondition) as used:
        await net.claims.claim("v2", "a")
    assert (used.value.reason, used.value.field) == ("NIC_IN_USE", "nic.nic")
    assert "vms/v1" in used.value.message and "free NIC" in used.value.message
    assert cluster.records()["v2"].nics == ()
    # Placement counts a hot-plugged NIC as in use too.
    with pytest.raises(FailedPrecondition) as create:
        await net.scheduler.place(replace(demand("v9", U1), nics=("a",)), request_id="r")
    assert create.value.reason == "NIC_IN_USE" and "vms/v1" in create.value.message


async def test_a_missing_nic_or_vm_is_refused(cluster: Cluster) -> None:
    net = await lab(cluster)
    with pytest.raises(NotFound) as nic:
        await net.claims.claim("v1", "zz")
    assert (nic.value.reason, nic.value.field) == ("NIC_NOT_FOUND", "nic.nic")
    assert "nics/zz" in nic.value.message and "nic.bridge" in nic.value.message
    with pytest.raises(NotFound) as vm:
        await net.claims.claim("nope", "a")
    assert (vm.value.reason, vm.value.field) == ("VM_NOT_FOUND", "name")
    assert user(net.catalog, "a") == ""


async def test_a_port_group_whose_switch_misses_the_vms_host_is_refused(cluster: Cluster) -> None:
    net = await lab(cluster)
    with pytest.raises(FailedPrecondition) as away:
        await net.claims.claim("far", "a")
    assert (away.value.reason, away.value.field) == ("PORT_GROUP_NOT_ON_HOST", "nic.nic")
    assert "h2" in away.value.message and "spans h1, h3" in away.value.message
    assert cluster.records()["far"].nics == () and user(net.catalog, "a") == ""


async def test_a_release_frees_the_nic_without_deleting_it(cluster: Cluster) -> None:
    net = await lab(cluster)
    await net.claims.claim("v1", "a")
    await net.claims.claim("v1", "b")
    assert net.claims.holding("v1", net.a.mac.upper()) == "a"
    assert (net.claims.holding("v2", net.a.mac), net.claims.holding("v1", "02:00:00:00:00:99")) == ("", "")
    revision = await net.claims.release("v1", "a")
    assert cluster.records()["v1"].nics == ("b",) and user(net.catalog, "a") == ""
    assert net.catalog.nic("a") == net.a and net.claims.holding("v1", net.a.mac) == ""
    assert await net.claims.release("v1", "a") == revision  # not listed: nothing written
    # Free again: another VM may take it, or it may be deleted.
    assert (await net.claims.claim("v2", "a")).new
    await net.claims.release("v2", "a")
    await net.catalog.delete_nic("a", request_id="d")
    with pytest.raises(NotFound):
        net.catalog.nic("a")


async def test_a_record_changed_meanwhile_is_not_overwritten(cluster: Cluster) -> None:
    net = await lab(cluster)
    moved: list[int] = []

    def change(record: VmRecord, _others: object) -> VmRecord | None:
        moved.append(1)
        return replace(record, nics=("a",))

    # The janitor moves the VM between the read and the commit (as it may: it writes
    # outside the placement lock): the commit fails instead of undoing the move.
    cluster.store.delay = 0.2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(cluster.commit, [_moved_record(cluster, "v1", "h3")]))
        await trio.sleep(0.05)
        with pytest.raises(Conflict) as conflict:
            await net.scheduler.amend("v1", change)
    assert conflict.value.reason == "ETAG_MISMATCH" and moved
    assert cluster.records()["v1"].host == "h3" and cluster.records()["v1"].nics == ()


def _moved_record(cluster: Cluster, name: str, host: str) -> Update:
    stored = cluster.replica.cache.get(KIND_VM, name)
    assert stored is not None
    record = replace(VmRecord.decode(stored.data), host=host)
    return Update(kind=KIND_VM, name=name, data=record.encode(), expected_revision=stored.revision)


# -- the attach and detach steps around a VM host's (fake) libvirt ------------------------


class Steps:
    """The leader's three steps for one attach, as the API wires them, with the VM's
    host a FakeVmNics."""

    def __init__(self, net: Lab, host: FakeVmNics, vm: str, nic: str) -> None:
        self.net, self.host, self.vm, self.nic = net, host, vm, nic

    async def claim(self) -> Claim:
        return await self.net.claims.claim(self.vm, self.nic)

    async def plug(self, claim: Claim) -> tuple[str, ...]:
        return await self.host.plug(self.vm, claim.nic.mac)

    async def release(self) -> int:
        return await self.net.claims.release(self.vm, self.nic)

    async def attach(self) -> tuple[tuple[str, ...], Claim]:
        return await plug_claimed(claim=self.claim, plug=self.plug, release=self.release)

    async def detach(self, mac: str) -> tuple[tuple[str, ...], int]:
        return await unplug_released(
            unplug=lambda: self.host.unplug(self.vm, mac),
            current=lambda: self.host.current(self.vm),
            release=self.release,
        )


async def test_attach_claims_then_plugs(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    macs, claim = await Steps(net, host, "v1", "a").attach()
    assert macs == (net.a.mac,) and claim.new and cluster.records()["v1"].nics == ("a",)
    assert host.calls == [("plug", "v1", net.a.mac)]


async def test_a_refused_claim_never_reaches_the_vms_host(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    await Steps(net, host, "v1", "a").attach()
    with pytest.raises(FailedPrecondition):
        await Steps(net, host, "v2", "a").attach()
    with pytest.raises(FailedPrecondition):
        await Steps(net, host, "far", "b").attach()
    assert [c[1] for c in host.calls] == ["v1"]


@pytest.mark.parametrize(
    "refusal",
    [
        InvalidArgument("attaching to VM v1: unsupported configuration", reason="DOMAIN_CONFIG"),
        Internal("attaching to VM v1: internal error", reason="HYPERVISOR_ERROR"),
        FailedPrecondition("host h1 is unreachable", reason="HOST_UNREACHABLE"),
    ],
)
async def test_a_plug_libvirt_refuses_puts_the_claim_back(cluster: Cluster, refusal: ZsdError) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    host.refuse = refusal
    with pytest.raises(type(refusal)) as refused:
        await Steps(net, host, "v1", "a").attach()
    assert refused.value is refusal
    assert (
        cluster.records()["v1"].nics == () and user(net.catalog, "a") == "" and host.macs.get("v1", ()) == ()
    )
    # Nothing is left behind: the NIC goes to another VM.
    assert (await Steps(net, host, "v2", "a").attach())[0] == (net.a.mac,)


async def test_a_repeated_attach_the_vm_already_has_keeps_the_claim(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    await Steps(net, host, "v1", "a").attach()
    with pytest.raises(ZsdError) as exists:
        await Steps(net, host, "v1", "a").attach()
    assert exists.value.reason == "NIC_EXISTS"
    assert cluster.records()["v1"].nics == ("a",) and host.macs["v1"] == (net.a.mac,)


async def test_a_plug_that_may_still_happen_keeps_the_claim(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    host.refuse = DeadlineExceeded("host h1 did not answer in time")
    with pytest.raises(DeadlineExceeded):
        await Steps(net, host, "v1", "a").attach()
    # The NIC may be in the guest by now: never handed to another VM meanwhile.
    assert cluster.records()["v1"].nics == ("a",)
    with pytest.raises(FailedPrecondition):
        await Steps(net, host, "v2", "a").attach()
    # The VM never got it: a detach frees the claim all the same.
    macs, _ = await Steps(net, host, "v1", "a").detach(net.a.mac)
    assert macs == () and user(net.catalog, "a") == ""


async def test_a_release_that_fails_after_a_refused_plug_is_logged(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    host.refuse = InvalidArgument("bad", reason="DOMAIN_CONFIG")
    steps = Steps(net, host, "v1", "a")

    async def lost_leadership() -> int:
        raise Unavailable("this host was deposed as leader", reason="NOT_LEADER")

    with caplog.at_level(logging.WARNING), pytest.raises(InvalidArgument):
        await plug_claimed(claim=steps.claim, plug=steps.plug, release=lost_leadership)
    assert "NIC a stays claimed for VM v1" in caplog.text and "deposed" in caplog.text


async def test_detach_unplugs_then_frees_the_nic(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    steps = Steps(net, host, "v1", "a")
    await steps.attach()
    macs, revision = await steps.detach(net.a.mac)
    assert macs == () and host.calls[-1] == ("unplug", "v1", net.a.mac)
    assert cluster.records()["v1"].nics == () and user(net.catalog, "a") == ""
    assert cluster.control.revision >= revision
    await net.catalog.delete_nic("a", request_id="d")


async def test_an_unplug_libvirt_refuses_keeps_the_nic_claimed(cluster: Cluster) -> None:
    net = await lab(cluster)
    host = FakeVmNics()
    steps = Steps(net, host, "v1", "a")
    await steps.attach()
    host.refuse = FailedPrecondition("detaching from VM v1: guest did not release it", reason="DOMAIN_STATE")
    with pytest.raises(FailedPrecondition):
        await steps.detach(net.a.mac)
    assert cluster.records()["v1"].nics == ("a",) and host.macs["v1"] == (net.a.mac,)
    with pytest.raises(FailedPrecondition) as delete:
        await net.catalog.delete_nic("a", request_id="d")
    assert delete.value.reason == "NIC_IN_USE"


# -- what every host makes of the records ------------------------------------------------


def dhcp(cluster: Cluster, host: str, tmp_path: Path) -> DhcpReconciler:
    manager = DhcpManager(
        state_dir=tmp_path, links=FakeLinks(), firewall=FakeFirewall(), processes=FakeProcesses()
    )
    return DhcpReconciler(control=cluster.control, host=host, manager=manager)


async def test_dhcp_firewall_and_vxlan_follow_a_hot_plugged_nic(cluster: Cluster, tmp_path: Path) -> None:
    net = await lab(cluster)
    mac, ip = net.a.mac, net.a.addresses[0]

    def served_on(host: str) -> list[tuple[str, str, str]]:
        return [(n.mac, n.ipv4, n.hostname) for s in dhcp(cluster, host, tmp_path).desired() for n in s.nics]

    def guarded_on(host: str) -> list[str]:
        return [n.mac for n in FirewallReconciler(control=cluster.control, host=host).desired().nics]

    def fabric(host: str) -> FabricReconciler:
        return FabricReconciler(control=cluster.control, host=host, address=ADDRESSES[host], links=Links())

    assert served_on("h1") == [] and guarded_on("h1") == [] and fabric("h1").desired().taps == ()
    await net.claims.claim("v1", "a")
    assert served_on("h1") == [(mac, ip, "v1")] and served_on("h3") == []
    assert guarded_on("h1") == [mac] and guarded_on("h3") == []
    assert [(t.name, t.bridge) for t in fabric("h1").desired().taps] == [(tap_name(mac), WEB.bridge)]
    # h3 sends unicast for the NIC straight to h1 rather than flooding it.
    assert (WEB.vxlan_link, mac, ADDRESSES["h1"]) in [
        (f.link, f.mac, f.dst) for f in fabric("h3").desired().fdb
    ]
    await net.claims.release("v1", "a")
    assert served_on("h1") == [] and guarded_on("h1") == [] and fabric("h1").desired().taps == ()
    assert mac not in [f.mac for f in fabric("h3").desired().fdb]
