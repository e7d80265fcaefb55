"""The collector on a fake machine, with stand-ins for the KVM probe and libvirtd."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.unit.host.conftest import EXPECTED_DISKS, FakeHost
from zsd.api import convert
from zsd.cluster.local import HostRecord, HostState
from zsd.errors import InvalidArgument
from zsd.host.facts import FactsCollector, default_collector
from zsd.host.fakes import StaticKvmProber, StaticLibvirtInfo
from zsd.host.kvmprobe import KvmProbeResult
from zsd.host.libvirtinfo import LibvirtConnectionSource, LibvirtInfo
from zsd.host.model import (
    CpuFacts,
    HostFacts,
    HypervisorFacts,
    HypervisorKind,
    MemoryFacts,
    NicFacts,
    NumaNodeFacts,
)
from zsd.testing.fakesysfs import FakeSysfs

USABLE = KvmProbeResult(usable=True, reason="guest ran under KVM")
UNUSABLE = KvmProbeResult(usable=False, reason="unexpected exit reason 17")
LIBVIRT = LibvirtInfo(reachable=True, libvirt_version="9.0.0", qemu_version="7.2.2")


@dataclass(frozen=True, kw_only=True)
class Addr:
    family: int
    address: str
    netmask: str | None


def _addresses() -> dict[str, list[Addr]]:
    return {"eno1": [Addr(family=socket.AF_INET, address="192.0.2.10", netmask="255.255.255.0")]}


@dataclass
class BlockingProber:
    """Blocks like a probe stuck in the kernel, until the test releases it."""

    release: threading.Event
    calls: list[str] = field(default_factory=list)

    def probe(self) -> KvmProbeResult:
        self.calls.append("probe")
        self.release.wait(10)
        return USABLE

    def read(self) -> LibvirtInfo:
        self.calls.append("read")
        self.release.wait(10)
        return LIBVIRT


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _collector(host: FakeHost, **overrides: object) -> FactsCollector:
    arguments: dict[str, object] = {
        "sysfs": host.sysfs,
        "procfs": host.procfs,
        "libvirt": StaticLibvirtInfo(info=LIBVIRT),
        "kvm_prober": StaticKvmProber(result=USABLE),
        "hypervisor": "auto",
        "os_release": host.os_release,
        "interface_addresses": _addresses,
    }
    arguments |= overrides
    return FactsCollector(**arguments)  # type: ignore[arg-type]


async def test_collects_everything_from_a_fake_machine(fake_host: FakeHost) -> None:
    before = time.time()

    facts = await _collector(fake_host).collect()

    assert before <= facts.collected_at <= time.time()
    assert facts == HostFacts(
        hypervisor=HypervisorFacts(
            kind=HypervisorKind.KVM,
            reason="guest ran under KVM",
            libvirt_reachable=True,
            libvirt_version="9.0.0",
            qemu_version="7.2.2",
        ),
        cpu=CpuFacts(
            model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
            vendor="GenuineIntel",
            arch="x86_64",
            sockets=2,
            cores_per_socket=2,
            threads_per_core=2,
            count=8,
            flags=("fpu", "vme", "de", "pse", "vmx", "avx2"),
        ),
        memory=MemoryFacts(total_bytes=16384000 * 1024, available_bytes=8192000 * 1024),
        numa_nodes=(
            NumaNodeFacts(id=0, cpus=(0, 1, 2, 3), memory_bytes=8192000 * 1024),
            NumaNodeFacts(id=1, cpus=(4, 5, 6, 7), memory_bytes=8192000 * 1024),
        ),
        disks=EXPECTED_DISKS,
        nics=(
            NicFacts(name="br0", mac_address="52:54:00:aa:bb:cc", mtu=1500, up=False),
            NicFacts(
                name="eno1",
                mac_address="3c:ec:ef:01:02:03",
                mtu=9000,
                up=True,
                speed_mbps=10000,
                addresses=("192.0.2.10/24",),
                driver="ixgbe",
            ),
        ),
        kernel="6.1.0-50-amd64",
        os="Debian GNU/Linux 12 (bookworm)",
        boot_time=1700000000.0,
        collected_at=facts.collected_at,
        problems=(),
    )


async def test_unusable_kvm_means_qemu_and_a_problem(fake_host: FakeHost) -> None:
    facts = await _collector(fake_host, kvm_prober=StaticKvmProber(result=UNUSABLE)).collect()

    assert facts.hypervisor.kind is HypervisorKind.QEMU
    assert facts.hypervisor.reason == "KVM not usable (unexpected exit reason 17); using TCG"
    assert facts.problems == ("KVM not usable: unexpected exit reason 17",)


@pytest.mark.parametrize(("mode", "kind"), [("kvm", HypervisorKind.KVM), ("qemu", HypervisorKind.QEMU)])
async def test_forced_hypervisor_does_not_probe(
    fake_host: FakeHost, release: threading.Event, mode: str, kind: HypervisorKind
) -> None:
    prober = BlockingProber(release=release)

    facts = await _collector(fake_host, kvm_prober=prober, hypervisor=mode).collect()

    assert prober.calls == []
    assert facts.hypervisor.kind is kind
    assert facts.hypervisor.reason == f"configured: hypervisor = {mode}"
    assert facts.problems == ()


async def test_unreachable_libvirt_is_a_problem_not_an_error(fake_host: FakeHost, tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/no-such-socket"

    facts = await _collector(fake_host, libvirt=LibvirtConnectionSource(uri=uri)).collect()

    assert facts.hypervisor.kind is HypervisorKind.KVM
    assert (facts.hypervisor.libvirt_reachable, facts.hypervisor.libvirt_version) == (False, "")
    assert len(facts.problems) == 1
    assert facts.problems[0].startswith(f"libvirt at {uri} not reachable: ")


async def test_hung_probe_is_abandoned_after_its_deadline(
    fake_host: FakeHost, release: threading.Event
) -> None:
    prober = BlockingProber(release=release)

    with trio.fail_after(2):
        facts = await _collector(fake_host, kvm_prober=prober, probe_deadline=0.2).collect()

    assert prober.calls == ["probe"]
    assert facts.hypervisor.kind is HypervisorKind.QEMU
    assert facts.hypervisor.reason == "KVM probe did not answer within 0.2 s; using TCG"
    assert facts.problems == ("KVM not usable: probe did not answer within 0.2 s",)


async def test_hung_libvirt_is_abandoned_after_its_deadline(
    fake_host: FakeHost, release: threading.Event
) -> None:
    source = BlockingProber(release=release)

    with trio.fail_after(2):
        facts = await _collector(fake_host, libvirt=source, libvirt_deadline=0.2).collect()

    assert source.calls == ["read"]
    assert facts.hypervisor.kind is HypervisorKind.KVM
    assert not facts.hypervisor.libvirt_reachable
    assert facts.problems == ("libvirtd did not answer within 0.2 s",)


async def test_missing_files_become_problems(tmp_path: Path) -> None:
    empty = FakeHost(root=tmp_path)

    facts = await _collector(empty).collect()

    assert facts.cpu.count >= 1
    assert facts.disks == () and facts.nics == ()
    assert len(facts.numa_nodes) == 1
    assert any("meminfo" in p for p in facts.problems)
    assert any("os-release" in p for p in facts.problems)


def test_unknown_hypervisor_mode_is_rejected(fake_host: FakeHost) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _collector(fake_host, hypervisor="xen")

    assert caught.value.field == "hypervisor"


async def test_default_collector_wires_real_sources(fake_host: FakeHost) -> None:
    collector = default_collector(
        sysfs=fake_host.sysfs, procfs=fake_host.procfs, libvirt_uri="test:///default", hypervisor="qemu"
    )

    facts = await collector.collect()

    assert facts.hypervisor.kind is HypervisorKind.QEMU
    assert facts.hypervisor.libvirt_reachable
    assert facts.cpu.count == 8


async def test_no_kvm_device_means_qemu_without_a_problem(fake_host: FakeHost) -> None:
    absent = KvmProbeResult(usable=False, reason="no /dev/kvm", device_present=False)
    facts = await _collector(fake_host, kvm_prober=StaticKvmProber(result=absent)).collect()

    assert facts.hypervisor.kind is HypervisorKind.QEMU
    assert facts.hypervisor.reason == "KVM not usable (no /dev/kvm); using TCG"
    assert facts.problems == ()


async def test_pci_devices_are_part_of_the_inventory(fake_host: FakeHost) -> None:
    sysfs = FakeSysfs(fake_host.sysfs)
    sysfs.add("0000:3b:00.0", driver="ixgbe", iommu_group=30, total_vfs=8, num_vfs=1)
    sysfs.add("0000:3b:10.0", driver="vfio-pci", iommu_group=31, physfn="0000:3b:00.0")

    facts = await _collector(fake_host).collect()

    assert [(d.address, d.is_pf, d.is_vf, d.iommu_group) for d in facts.pci_devices] == [
        ("0000:3b:00.0", True, False, 30),
        ("0000:3b:10.0", False, True, 31),
    ]
    record = HostRecord(
        name="h1",
        host_id=1,
        uid="u",
        address="192.0.2.1",
        state=HostState.READY,
        state_reasons=(),
        facts=facts,
        zsd_version="0",
        started_at=0.0,
    )
    message = convert.host(record, now=1.0)
    assert [(d.address, d.total_vfs, d.num_vfs, d.physfn, d.iommu_group) for d in message.pci_devices] == [
        ("0000:3b:00.0", 8, 1, "", 30),
        ("0000:3b:10.0", 0, 0, "0000:3b:00.0", 31),
    ]
    # A damaged entry is a problem to report, not a failed inventory.
    (sysfs.device_dir("0000:3b:00.0") / "sriov_numvfs").write_text("?\n")
    damaged = await _collector(fake_host).collect()
    assert damaged.pci_devices == () and any("PCI devices not read" in p for p in damaged.problems)
