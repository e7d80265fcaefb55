"""The leader's placement over a real cluster.db and the leader's own state copy:
CreateVm's records carry the VM's PCI devices and the next placement counts them;
HA restarts choose and commit under the same lock as creates, so a restart and a
create never both take the last capacity, and the restarts of one round see each
other."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from zsd.api.vmcluster import ClusterVms
from zsd.cluster.control import ClusterControl
from zsd.cluster.leadership import LeadershipState
from zsd.cluster.lease.authority import HostStatus
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.records import KIND_HOST, KIND_HOST_STATUS, HostEntry
from zsd.cluster.replica import Replica
from zsd.cluster.store import (
    ChangeSet,
    CommitResult,
    Create,
    Mutation,
    ResponseBuilder,
    Snapshot,
    StoreService,
)
from zsd.compute import ha
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import Demand, Scheduler
from zsd.compute.spec import VmSpec
from zsd.errors import FailedPrecondition, NotFound, ResourceExhausted
from zsd.network import records as netrecords
from zsd.network.model import PortGroup, Switch
from zsd.network.nics import KIND_NIC, NicRecord
from zsd.network.records import KIND_PORT_GROUP, KIND_SWITCH
from zsd.v1 import compute_pb2, host_pb2, storage_pb2

MiB = 1 << 20
NIC = "0000:3b:00.1"
U1 = "00000000-0000-4000-8000-000000000001"
U2 = "00000000-0000-4000-8000-000000000002"
U3 = "00000000-0000-4000-8000-000000000003"


class SlowStore(StoreService):
    """A store whose commits take a while once ``delay`` is set: time for another
    placement to run between one placement's choice and its commit."""

    delay = 0.0

    async def commit(
        self,
        mutations: Sequence[Mutation],
        *,
        request_id: str | None = None,
        fingerprint: bytes = b"",
        response: bytes | ResponseBuilder = b"",
    ) -> CommitResult:
        await trio.sleep(self.delay)
        return await super().commit(
            mutations, request_id=request_id, fingerprint=fingerprint, response=response
        )


class Leading:
    """This host leads for good (what Replica and ClusterControl read of Leadership)."""

    def __init__(self, store: StoreService) -> None:
        self.state = LeadershipState(leading=True, leader_host_id=1, epoch=1, since=0.0, store=store)

    async def wait_changed(self) -> LeadershipState:
        await trio.sleep_forever()


async def _no_leader(state: LeadershipState) -> PeerTarget | None:
    raise AssertionError("the leader follows its own store")


async def _no_feed(
    target: PeerTarget, revision: int, snapshot: bool
) -> AsyncGenerator[Snapshot | ChangeSet, None]:
    raise AssertionError("the leader follows its own store")
    yield  # pragma: no cover


class Cluster:
    """A leader with its store and state copy; hosts and VMs are added as records."""

    def __init__(self, store: SlowStore) -> None:
        self.store = store
        self.gossip: dict[str, str] = {}
        self.leases: dict[int, HostStatus] = {}
        leadership = Leading(store)
        self.replica = Replica(leadership=leadership, resolve=_no_leader, open_feed=_no_feed)
        self.control = ClusterControl(
            leadership=leadership,
            replica=self.replica,
            gossip=lambda: self.gossip,
            leases=lambda: self.leases,
            host_name="h0",
        )
        self._ids = 0

    async def commit(self, mutations: Sequence[Mutation]) -> None:
        result = await self.store.commit(mutations)
        with trio.fail_after(5):
            await self.replica.cache.wait_for(result.revision)

    async def host(
        self,
        name: str,
        *,
        memory_mib: int = 8192,
        devices: Sequence[host_pb2.PciDevice] = (),
        vms: Sequence[host_pb2.HostVm] = (),
        dead: bool = False,
    ) -> None:
        self._ids += 1
        report = host_pb2.Host(
            name=f"hosts/{name}",
            state=host_pb2.Host.READY,
            cpu=host_pb2.Cpu(count=8),
            memory=host_pb2.Memory(total_bytes=memory_mib * MiB),
            pools=[host_pb2.HostPool(pool="pools/shared", state=storage_pb2.Pool.ACTIVE)],
            pci_devices=devices,
            vms=vms,
        )
        self.gossip[name] = "dead" if dead else "alive"
        self.leases[self._ids] = HostStatus.DEAD if dead else HostStatus.LIVE
        await self.commit(
            [
                Create(kind=KIND_HOST, name=name, data=HostEntry(name=name, host_id=self._ids).encode()),
                Create(kind=KIND_HOST_STATUS, name=name, data=report.SerializeToString()),
            ]
        )

    async def vm(self, record: VmRecord) -> None:
        await self.commit([Create(kind=KIND_VM, name=record.name, data=record.encode())])

    def records(self) -> dict[str, VmRecord]:
        return {r.name: VmRecord.decode(r.data) for r in self.replica.cache.list(KIND_VM)}


def nic(address: str = NIC, *, group: int = 30) -> host_pb2.PciDevice:
    return host_pb2.PciDevice(
        address=address, vendor="0x8086", device="0x10fb", pci_class="0x020000", iommu_group=group
    )


def demand(name: str, uid: str, *hostdevs: str, memory_mib: int = 1024) -> Demand:
    return Demand(
        name=name,
        uid=uid,
        vcpus=1,
        memory_mib=memory_mib,
        pools=frozenset({"shared"}),
        hostdevs=hostdevs,
    )


def ha_vm(name: str, uid: str, *hostdevs: str) -> tuple[VmRecord, host_pb2.HostVm]:
    """An HA VM with a lease on its (dead) host: its record and its last report."""
    spec = VmSpec(
        name=name,
        uid=uid,
        memory_mib=1024,
        hostdevs=hostdevs,
        ha=True,
        lease_lockspace="zsd",
        lease_path=f"/shared/leases/vms/{uid}",
    )
    record = VmRecord(
        name=name, uid=uid, host="h1", vcpus=1, memory_mib=1024, pools=("shared",), hostdevs=hostdevs, ha=True
    )
    reported = host_pb2.HostVm(
        vm=f"vms/{name}", uid=uid, state=compute_pb2.Vm.RUNNING, ha_spec=spec.to_json()
    )
    return record, reported


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


async def test_a_created_vm_holds_its_devices_for_the_next_placement(cluster: Cluster) -> None:
    await cluster.host("h1", devices=[nic()])
    await cluster.host("h2", devices=[nic()], memory_mib=4096)
    await cluster.host("h3", devices=[nic(group=-1)])  # no IOMMU: reported as group -1
    await cluster.host("h4")
    scheduler = Scheduler(cluster.control)
    first, _ = await scheduler.place(demand("a", U1, NIC), request_id="r1")
    assert (first.host, first.hostdevs) == ("h1", (NIC,))
    assert cluster.records()["a"].hostdevs == (NIC,)
    # Records from before devices were recorded hold none.
    assert (
        VmRecord.decode(b'{"name": "o", "uid": "u", "host": "h1", "vcpus": 1, "memory_mib": 1}').hostdevs
        == ()
    )
    second, _ = await scheduler.place(demand("b", U2, NIC), request_id="r2")
    assert second.host == "h2"
    with pytest.raises(ResourceExhausted) as refused:
        await scheduler.place(demand("c", U3, NIC), request_id="r3")
    why = dict(refused.value.metadata)
    assert why.pop("h3").startswith(f"PCI device {NIC} has no IOMMU group")
    assert why == {
        "h1": f"PCI device {NIC} is assigned to VM a",
        "h2": f"PCI device {NIC} is assigned to VM b",
        "h4": f"no PCI device {NIC} on this host",
    }
    # A VM without devices is not held back by them.
    assert (await scheduler.place(replace(demand("d", U3), pinned="h1"), request_id="r4"))[0].host == "h1"


async def test_an_ha_restart_and_a_create_never_both_take_the_last_capacity(
    cluster: Cluster, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    record, reported = ha_vm("a", U1)
    await cluster.host("h1", vms=[reported], dead=True)
    await cluster.host("h2", memory_mib=1024)  # room for one of the two
    await cluster.vm(record)
    scheduler = Scheduler(cluster.control)
    created: list[str] = []

    async def create() -> None:
        try:
            created.append((await scheduler.place(demand("b", U2), request_id="r1"))[0].host)
        except ResourceExhausted as e:
            created.append(e.metadata["h2"])

    caplog.set_level(logging.WARNING, logger="zsd.compute.ha")
    # Both at once, each commit slow: whichever chooses first, the other chooses
    # before that commit lands unless the lock keeps it waiting.
    cluster.store.delay = 0.05
    nursery.start_soon(ha.run, cluster.control, scheduler)
    nursery.start_soon(create)

    def settled() -> bool:
        restarted = cluster.records()["a"].host == "h2"
        refused = any("cannot be restarted now" in r.getMessage() for r in caplog.records)
        return bool(created) and (restarted or refused)

    await until(settled)  # the create and the restart both answered
    on_h2 = sorted(n for n, r in cluster.records().items() if r.host == "h2")
    assert len(on_h2) == 1, f"both took h2's last 1024 MiB: {on_h2}"
    if on_h2 == ["a"]:
        assert created == ["0 MiB free of 1024 (needs 1024)"]
    else:
        assert created == ["h2"]
        assert cluster.records()["a"].host == "h1"


async def test_the_restarts_of_one_round_count_each_other(cluster: Cluster, nursery: trio.Nursery) -> None:
    a, a_reported = ha_vm("a", U1)
    b, b_reported = ha_vm("b", U2)
    await cluster.host("h1", vms=[a_reported, b_reported], dead=True)
    await cluster.host("h2", memory_mib=1024)
    await cluster.host("h3", memory_mib=1024)
    await cluster.vm(a)
    await cluster.vm(b)
    nursery.start_soon(ha.run, cluster.control, Scheduler(cluster.control))
    await until(lambda: all(r.host != "h1" for r in cluster.records().values()))
    assert sorted(r.host for r in cluster.records().values()) == ["h2", "h3"]


async def test_an_ha_vm_is_restarted_only_where_its_device_is_free(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    a, a_reported = ha_vm("a", U1, NIC)
    await cluster.host("h1", vms=[a_reported], dead=True, devices=[nic()])
    await cluster.host("h2", devices=[nic()])  # the emptiest, but x holds its NIC
    await cluster.host("h3", devices=[nic()], memory_mib=4096)
    await cluster.host("h4")  # no such device
    await cluster.vm(a)
    await cluster.vm(VmRecord(name="x", uid=U2, host="h2", vcpus=1, memory_mib=512, hostdevs=(NIC,)))
    nursery.start_soon(partial(ha.run, cluster.control, Scheduler(cluster.control), clock=lambda: 42.0))
    await until(lambda: cluster.records()["a"].host != "h1")
    moved = cluster.records()["a"]
    assert (moved.host, moved.hostdevs, moved.restarted_from, moved.restart_time) == (
        "h3",
        (NIC,),
        "h1",
        42.0,
    )
    assert VmSpec.from_json(moved.restart).hostdevs == (NIC,)


async def test_a_vm_with_host_devices_is_not_moved(cluster: Cluster) -> None:
    await cluster.host("h1", devices=[nic()])
    await cluster.host("h2", devices=[nic()])
    scheduler = Scheduler(cluster.control)
    placed, _ = await scheduler.place(replace(demand("a", U1, NIC), pinned="h1"), request_id="r1")
    peers = cast(Any, SimpleNamespace(host="h0"))  # destination() asks no peer
    vms = ClusterVms(gateway=cast(Any, None), control=cluster.control, router=cast(Any, None), peers=peers)
    for to in ("h2", ""):
        with pytest.raises(FailedPrecondition) as refused:
            vms.destination("a", to)
        assert (refused.value.reason, refused.value.field) == ("VM_HAS_HOST_DEVICES", "name")
        assert NIC in refused.value.message and placed.host == "h1"
    # Without devices it gets through placement to h2 (whose report, here, names no
    # migration URI).
    await scheduler.place(replace(demand("b", U2), pinned="h1"), request_id="r2")
    with pytest.raises(FailedPrecondition) as later:
        vms.destination("b", "")
    assert later.value.reason == "NO_MIGRATION_URI" and "host h2" in later.value.message


def nic_record(name: str, port_group: str) -> bytes:
    return NicRecord(name=name, port_group=port_group, mac=f"02:00:00:00:00:{ord(name[0]):02x}").encode()


async def test_vms_with_network_nics_go_where_their_port_group_is(cluster: Cluster) -> None:
    await cluster.host("h1")
    await cluster.host("h2", memory_mib=65536)  # spread would pick h2, but the switch is on h1 only
    switch = Switch(name="lab", kind="vxlan", uplink="eth0", hosts=("h1",))
    web = PortGroup(switch="lab", name="web", vni=100)
    await cluster.commit(
        [
            Create(kind=KIND_SWITCH, name="lab", data=netrecords.encode_switch(switch)),
            Create(kind=KIND_PORT_GROUP, name=web.key, data=netrecords.encode_port_group(web)),
            Create(kind=KIND_NIC, name="a", data=nic_record("a", web.key)),
        ]
    )
    scheduler = Scheduler(cluster.control)
    placed, _ = await scheduler.place(replace(demand("v1", U1), nics=("a",)), request_id="r1")
    assert (placed.host, placed.nics) == ("h1", ("a",))
    with pytest.raises(FailedPrecondition) as used:
        await scheduler.place(replace(demand("v2", U2), nics=("a",)), request_id="r2")
    assert (used.value.reason, used.value.field) == ("NIC_IN_USE", "vm.nics[0].nic")
    assert "vms/v1" in used.value.message
    with pytest.raises(NotFound) as missing:
        await scheduler.place(replace(demand("v2", U2), nics=("zz",)), request_id="r3")
    assert missing.value.reason == "NIC_NOT_FOUND"
    # Pinned where the switch is not: refused with the reason.
    await cluster.commit([Create(kind=KIND_NIC, name="b", data=nic_record("b", web.key))])
    with pytest.raises(ResourceExhausted) as nowhere:
        await scheduler.place(replace(demand("v3", U3), nics=("b",), pinned="h2"), request_id="r4")
    assert "lab/web" in dict(nowhere.value.metadata)["h2"]
