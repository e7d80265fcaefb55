"""HostService.SetPciVfs over real gRPC (a Unix socket, the API thread bridged to trio)
against a fake sysfs tree: the PF returned from the refreshed inventory, retries that
change nothing, every refusal with its code, reason and field, a host that is not the
serving one; and ``zsctl host set-vfs`` driving it."""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TypeVar, cast

import grpc
import pytest
import trio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fakes import sample_facts
from tests.unit.api.served import api_server
from zsd.api.gateway import Gateway
from zsd.api.services.hosts import HostService
from zsd.cli.zsctl import main as zsctl_main
from zsd.cluster.control import ClusterControl
from zsd.cluster.identity import ClusterIdentity, HostIdentity
from zsd.cluster.local import LocalCluster
from zsd.cluster.operations import OperationRegistry
from zsd.cluster.records import HostEntry
from zsd.errors import NotFound
from zsd.host import pci
from zsd.host.inventory import Inventory
from zsd.host.model import HostFacts
from zsd.testing.fakesysfs import FakeSysfs
from zsd.util.apithread import open_api_thread
from zsd.v1 import host_pb2, host_pb2_grpc

T = TypeVar("T")
PF, VF0, VF1 = "0000:3b:00.0", "0000:3b:10.0", "0000:3b:10.2"
GPU = "0000:af:00.0"
# A PF whose sriov_numvfs dangles: writing it fails with a genuine OSError (ENOENT,
# what the kernel answers when no driver is bound to the PF).
DRIVERLESS = "0000:5e:00.0"


class SysfsCollector:
    """Host facts with the PCI devices read from the fake tree at each collection."""

    def __init__(self, sysfs: Path) -> None:
        self.sysfs = sysfs
        self.calls = 0

    async def collect(self) -> HostFacts:
        self.calls += 1
        return replace(sample_facts(), pci_devices=tuple(pci.inventory(sysfs=self.sysfs)))


@dataclass(frozen=True)
class _View:
    entry: HostEntry


class MemberControl:
    """The one thing SetPciVfs asks a member's ClusterControl: who the members are."""

    def __init__(self, *entries: HostEntry) -> None:
        self.entries = {e.name: e for e in entries}

    def host_view(self, name: str) -> _View:
        if name not in self.entries:
            raise NotFound(f"host 'hosts/{name}' is not a member of this cluster", field="name")
        return _View(entry=self.entries[name])


@dataclass
class Served:
    sysfs: FakeSysfs
    collector: SysfsCollector
    socket: Path
    hosts: host_pb2_grpc.HostServiceStub

    async def call(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    async def set_vfs(self, address: str, count: int, *, name: str = "hosts/-") -> host_pb2.PciDevice:
        request = host_pb2.SetPciVfsRequest(name=name, address=address, count=count)
        return await self.call(lambda: self.hosts.SetPciVfs(request, timeout=10))

    async def pf_in_host(self) -> host_pb2.PciDevice:
        host = await self.call(lambda: self.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/-")))
        [pf] = [d for d in host.pci_devices if d.address == PF]
        return pf


def fake_tree(root: Path) -> FakeSysfs:
    fake = FakeSysfs(root)
    fake.add(PF, driver="ixgbe", iommu_group=30, total_vfs=8, num_vfs=2)
    fake.add(VF0, device="0x10ed", driver="ixgbevf", iommu_group=31, physfn=PF)
    fake.add(VF1, device="0x10ed", driver="ixgbevf", iommu_group=32, physfn=PF)
    fake.add(GPU, vendor="0x10de", pci_class="0x030200", driver="vfio-pci", iommu_group=40)
    d = fake.add(DRIVERLESS, iommu_group=50, total_vfs=4)
    (d / "sriov_numvfs").unlink()
    os.symlink("gone/sriov_numvfs", d / "sriov_numvfs")
    return fake


@asynccontextmanager
async def serve(
    tmp_path: Path, *, control: MemberControl | None = None, in_use: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    sysfs = fake_tree(tmp_path / "sys")
    collector = SysfsCollector(sysfs.root)
    inventory = Inventory(collector=collector, interval=3600)
    await inventory.refresh()
    now = time.time()
    cluster = LocalCluster(
        host_name="node1",
        address="192.0.2.10",
        host_identity=HostIdentity(uid="host-uid", host_id=1, created=now),
        cluster_identity=ClusterIdentity(uid="cluster-uid", name="zsd", created=now),
        inventory=inventory,
        version="test",
    )
    socket = tmp_path / "zsd.sock"
    async with open_api_thread("test-api") as bridge:
        service = HostService(
            gateway=Gateway(bridge.to_trio),
            cluster=cluster,
            inventory=inventory,
            operations=OperationRegistry(host="node1"),
            control=cast(ClusterControl, control),
            sysfs=sysfs.root,
            devices_in_use=lambda: in_use or {},
        )

        register = partial(host_pb2_grpc.add_HostServiceServicer_to_server, service)
        async with api_server(bridge, socket, register) as channel:
            yield Served(
                sysfs=sysfs, collector=collector, socket=socket, hosts=host_pb2_grpc.HostServiceStub(channel)
            )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tmp_path) as s:
        yield s


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[Served]:
    control = MemberControl(
        HostEntry(name="node1", host_id=1), HostEntry(name="node2", host_id=2, address="192.0.2.20")
    )
    async with serve(tmp_path, control=control) as s:
        yield s


def details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error.code(), info.reason, info.metadata.get("field", ""), error.details() or ""


async def test_set_vfs_returns_the_pf_as_the_refreshed_inventory_lists_it(served: Served) -> None:
    assert (await served.pf_in_host()).num_vfs == 2
    calls = served.collector.calls
    pf = await served.set_vfs(PF, 4)
    assert (pf.address, pf.num_vfs, pf.total_vfs, pf.driver, pf.iommu_group) == (PF, 4, 8, "ixgbe", 30)
    assert (served.sysfs.device_dir(PF) / "sriov_numvfs").read_text() == "4"
    assert served.collector.calls == calls + 1
    assert await served.pf_in_host() == pf  # Host.pci_devices shows it too
    # A retry (the count it has) writes nothing and collects nothing.
    assert await served.set_vfs(PF, 4) == pf
    assert served.collector.calls == calls + 1
    assert (await served.set_vfs(PF, 0, name="hosts/node1")).num_vfs == 0


INVALID, NOT_FOUND, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.mark.parametrize(
    ("address", "count", "expected"),
    [
        pytest.param(PF, 9, (INVALID, "INVALID_ARGUMENT", "count", "between 0 and 8"), id="range"),
        pytest.param(PF, -1, (INVALID, "INVALID_ARGUMENT", "count", "got -1"), id="negative"),
        pytest.param(
            "../../../etc",
            1,
            (INVALID, "INVALID_PCI_ADDRESS", "address", "not a PCI address like 0000:3b:00.1"),
            id="malformed",
        ),
        pytest.param(
            "0000:99:00.0",
            1,
            (NOT_FOUND, "PCI_DEVICE_NOT_FOUND", "address", "no PCI device 0000:99:00.0"),
            id="absent",
        ),
        pytest.param(
            GPU, 1, (PRECONDITION, "NOT_A_PF", "address", "not an SR-IOV physical function"), id="not-a-pf"
        ),
        pytest.param(
            DRIVERLESS,
            2,
            (
                PRECONDITION,
                "VF_ENABLE_FAILED",
                "address",
                f"the kernel refused to enable 2 VFs on {DRIVERLESS}: No such file or directory (ENOENT)",
            ),
            id="kernel-refuses",
        ),
    ],
)
async def test_refusals_carry_code_reason_and_field(
    served: Served, address: str, count: int, expected: tuple[grpc.StatusCode, str, str, str]
) -> None:
    code, reason, field, says = expected
    calls = served.collector.calls
    with pytest.raises(grpc.RpcError) as raised:
        await served.set_vfs(address, count)
    got_code, got_reason, got_field, message = details(raised.value)
    assert (got_code, got_reason, got_field) == (code, reason, field)
    assert says in message
    assert served.collector.calls == calls
    assert (await served.pf_in_host()).num_vfs == 2


async def test_vfs_a_vm_has_are_never_removed(tmp_path: Path) -> None:
    async with serve(tmp_path, in_use={VF1: "db1"}) as s:
        for count in (0, 4):
            with pytest.raises(grpc.RpcError) as raised:
                await s.set_vfs(PF, count)
            code, reason, field, message = details(raised.value)
            assert (code, reason, field) == (PRECONDITION, "PCI_DEVICE_IN_USE", "address")
            assert f"{VF1} (VM db1)" in message
        assert (s.sysfs.device_dir(PF) / "sriov_numvfs").read_text().strip() == "2"
    async with serve(tmp_path / "pf", in_use={PF: "router"}) as s:
        with pytest.raises(grpc.RpcError) as raised:
            await s.set_vfs(PF, 4)
        assert details(raised.value)[1] == "PCI_DEVICE_IN_USE"


async def test_another_host_of_the_cluster_of_one_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        await served.set_vfs(PF, 4, name="hosts/node2")
    assert details(raised.value)[:3] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "name")


async def test_a_member_changes_only_its_own_devices(member: Served) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        await member.set_vfs(PF, 4, name="hosts/node2")
    code, reason, field, message = details(raised.value)
    assert (code, reason, field) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_SERVING_HOST", "name")
    assert "acts on the host serving the call (node1), not hosts/node2" in message
    assert "node2's own zsd at 192.0.2.20" in message
    assert (member.sysfs.device_dir(PF) / "sriov_numvfs").read_text() == "2\n"  # untouched
    with pytest.raises(grpc.RpcError) as stranger:
        await member.set_vfs(PF, 4, name="hosts/node9")
    assert details(stranger.value)[:3] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "name")
    assert (await member.set_vfs(PF, 3, name="hosts/node1")).num_vfs == 3


async def zsctl(served: Served, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(
        lambda: zsctl_main(["--endpoint", f"unix:{served.socket}", *argv], env={}, stdout=out, stderr=err)
    )
    return code, out.getvalue(), err.getvalue()


async def test_zsctl_host_set_vfs(served: Served) -> None:
    code, out, err = await zsctl(served, "host", "set-vfs", PF, "6")
    assert (code, err) == (0, "")
    assert f"address: {PF}" in out.splitlines() and "num_vfs: 6" in out.splitlines()
    code, out, _ = await zsctl(served, "-o", "json", "host", "set-vfs", PF, "0", "--host", "node1")
    assert (code, '"num_vfs": 0' in out) == (0, True)
    code, _, err = await zsctl(served, "host", "set-vfs", GPU, "1")
    assert code == 1
    assert err.startswith("error: address: ") and "(reason: NOT_A_PF, field: address)" in err
    code, _, err = await zsctl(served, "host", "set-vfs", PF, "-1")
    assert code == 2 and "not a VF count" in err  # a usage error, before any call
