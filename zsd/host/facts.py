"""The host inventory: gathers every fact about this machine into one ``HostFacts``.

The readers are plain blocking functions; the collector runs them in worker
threads and bounds the two that can hang (the KVM probe and libvirtd), so
``collect`` always returns, with what it could not learn listed in ``problems``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import trio

from zsd.errors import InvalidArgument, ZsdError
from zsd.host import devices, pci, sysinfo
from zsd.host.kvmprobe import ChildProcessKvmProber, KvmProber, KvmProbeResult
from zsd.host.libvirtinfo import LibvirtConnectionSource, LibvirtInfo, LibvirtInfoSource
from zsd.host.model import (
    CpuFacts,
    DiskFacts,
    HostFacts,
    HypervisorFacts,
    HypervisorKind,
    MemoryFacts,
    NicFacts,
    NumaNodeFacts,
)
from zsd.host.pci import PciDevice

HYPERVISOR_MODES = ("auto", "kvm", "qemu")
# The probe child gets its own timeout; this margin covers interpreter start-up
# and the kill before the collector stops waiting for it.
_PROBE_DEADLINE_MARGIN = 5.0
_LIBVIRT_DEADLINE = 5.0

_T = TypeVar("_T")
InterfaceAddresses = Callable[[], Mapping[str, Sequence[devices.InterfaceAddress]]]


@dataclass(frozen=True, kw_only=True)
class MachineFacts:
    """Everything read from procfs, sysfs and os-release (fast, never hangs)."""

    cpu: CpuFacts
    memory: MemoryFacts
    numa_nodes: tuple[NumaNodeFacts, ...]
    disks: tuple[DiskFacts, ...]
    nics: tuple[NicFacts, ...]
    kernel: str
    os: str
    boot_time: float
    problems: tuple[str, ...] = ()
    pci_devices: tuple[PciDevice, ...] = ()


def _pci(sysfs: Path, problems: list[str]) -> tuple[PciDevice, ...]:
    try:
        return tuple(pci.inventory(sysfs=sysfs))
    except ZsdError as e:
        problems.append(f"PCI devices not read: {e.message}")
        return ()


def read_machine(
    *, sysfs: Path, procfs: Path, os_release: Path, interface_addresses: InterfaceAddresses
) -> MachineFacts:
    problems: list[str] = []
    cpus = sysinfo.online_cpus(sysfs=sysfs, procfs=procfs, problems=problems)
    cpu = sysinfo.read_cpu(sysfs=sysfs, procfs=procfs, cpus=cpus, problems=problems)
    memory = sysinfo.read_memory(procfs=procfs, problems=problems)
    return MachineFacts(
        cpu=cpu,
        memory=memory,
        numa_nodes=sysinfo.read_numa(
            sysfs=sysfs, cpus=cpus, memory_total=memory.total_bytes, problems=problems
        ),
        disks=devices.read_disks(sysfs=sysfs),
        nics=devices.read_nics(sysfs=sysfs, addresses=devices.cidr_addresses(interface_addresses())),
        kernel=sysinfo.read_kernel(procfs=procfs, problems=problems),
        os=sysinfo.read_os(os_release=os_release, problems=problems),
        boot_time=sysinfo.read_boot_time(procfs=procfs, problems=problems),
        pci_devices=_pci(sysfs, problems),
        problems=tuple(problems),
    )


def decide_hypervisor(
    *, mode: str, probe: KvmProbeResult | None, probe_deadline: float, libvirt: LibvirtInfo
) -> tuple[HypervisorFacts, tuple[str, ...]]:
    """The hypervisor to use and why, plus problems worth telling an operator.

    ``probe`` is None when the mode is forced (no probe ran) or the probe did not
    answer in time.
    """
    problems = []
    if mode != "auto":
        kind = HypervisorKind(mode)
        reason = f"configured: hypervisor = {mode}"
    elif probe is None:
        kind = HypervisorKind.QEMU
        reason = f"KVM probe did not answer within {probe_deadline} s; using TCG"
        problems.append(f"KVM not usable: probe did not answer within {probe_deadline} s")
    elif probe.usable:
        kind = HypervisorKind.KVM
        reason = probe.reason
    else:
        kind = HypervisorKind.QEMU
        reason = f"KVM not usable ({probe.reason}); using TCG"
        if probe.device_present:
            problems.append(f"KVM not usable: {probe.reason}")
    if not libvirt.reachable:
        problems.append(libvirt.error or "libvirtd not reachable")
    facts = HypervisorFacts(
        kind=kind,
        reason=reason,
        libvirt_reachable=libvirt.reachable,
        libvirt_version=libvirt.libvirt_version,
        qemu_version=libvirt.qemu_version,
        cpu_model=libvirt.cpu_model,
        domain_types=libvirt.domain_types,
    )
    return facts, tuple(problems)


async def _bounded(work: Callable[[], _T], deadline: float) -> _T | None:
    """Run blocking ``work`` in a thread; None if it has not finished after ``deadline`` s.

    An abandoned thread runs on until ``work`` returns; both kinds of work used
    here end by themselves (the probe kills its child, libvirt calls time out).
    """
    with trio.move_on_after(deadline):
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    return None


class FactsCollector:
    def __init__(
        self,
        *,
        sysfs: Path,
        procfs: Path,
        libvirt: LibvirtInfoSource,
        kvm_prober: KvmProber,
        hypervisor: str,
        os_release: Path = Path("/etc/os-release"),
        interface_addresses: InterfaceAddresses = psutil.net_if_addrs,
        probe_deadline: float = 3.0 + _PROBE_DEADLINE_MARGIN,
        libvirt_deadline: float = _LIBVIRT_DEADLINE,
    ) -> None:
        """``hypervisor`` is "auto" (probe KVM), or "kvm"/"qemu" forced by configuration."""
        if hypervisor not in HYPERVISOR_MODES:
            raise InvalidArgument(
                f"must be one of {', '.join(HYPERVISOR_MODES)}, not {hypervisor!r}", field="hypervisor"
            )
        self._sysfs = sysfs
        self._procfs = procfs
        self._libvirt = libvirt
        self._kvm_prober = kvm_prober
        self._hypervisor = hypervisor
        self._os_release = os_release
        self._interface_addresses = interface_addresses
        self._probe_deadline = probe_deadline
        self._libvirt_deadline = libvirt_deadline

    async def collect(self) -> HostFacts:
        """Gather all facts; returns within the probe and libvirt deadlines, never raises for
        missing facts."""
        collected_at = time.time()
        probe: KvmProbeResult | None = None
        libvirt: LibvirtInfo | None = None

        async def run_probe() -> None:
            nonlocal probe
            probe = await _bounded(self._kvm_prober.probe, self._probe_deadline)

        async def ask_libvirt() -> None:
            nonlocal libvirt
            libvirt = await _bounded(self._libvirt.read, self._libvirt_deadline)

        async with trio.open_nursery() as nursery:
            if self._hypervisor == "auto":
                nursery.start_soon(run_probe)
            nursery.start_soon(ask_libvirt)
            machine = await trio.to_thread.run_sync(self._read_machine)

        if libvirt is None:
            libvirt = LibvirtInfo(
                reachable=False, error=f"libvirtd did not answer within {self._libvirt_deadline} s"
            )
        hypervisor, hypervisor_problems = decide_hypervisor(
            mode=self._hypervisor, probe=probe, probe_deadline=self._probe_deadline, libvirt=libvirt
        )
        return HostFacts(
            hypervisor=hypervisor,
            cpu=machine.cpu,
            memory=machine.memory,
            numa_nodes=machine.numa_nodes,
            disks=machine.disks,
            nics=machine.nics,
            kernel=machine.kernel,
            os=machine.os,
            boot_time=machine.boot_time,
            collected_at=collected_at,
            problems=machine.problems + hypervisor_problems,
            pci_devices=machine.pci_devices,
        )

    def _read_machine(self) -> MachineFacts:
        return read_machine(
            sysfs=self._sysfs,
            procfs=self._procfs,
            os_release=self._os_release,
            interface_addresses=self._interface_addresses,
        )


def default_collector(
    *, sysfs: Path, procfs: Path, libvirt_uri: str, hypervisor: str, probe_timeout: float = 3.0
) -> FactsCollector:
    """The production wiring: the child-process KVM probe on /dev/kvm and libvirt at ``libvirt_uri``."""
    return FactsCollector(
        sysfs=sysfs,
        procfs=procfs,
        libvirt=LibvirtConnectionSource(uri=libvirt_uri),
        kvm_prober=ChildProcessKvmProber(timeout=probe_timeout),
        hypervisor=hypervisor,
        probe_deadline=probe_timeout + _PROBE_DEADLINE_MARGIN,
    )
