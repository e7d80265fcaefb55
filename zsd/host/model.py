"""Facts about one host, as plain frozen values (no I/O here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from zsd.host.pci import PciDevice


class HypervisorKind(enum.Enum):
    KVM = "kvm"
    QEMU = "qemu"


@dataclass(frozen=True, kw_only=True)
class HypervisorFacts:
    kind: HypervisorKind
    reason: str
    libvirt_reachable: bool
    libvirt_version: str = ""
    qemu_version: str = ""
    # From libvirt's capabilities; empty when libvirtd is unreachable.
    cpu_model: str = ""
    domain_types: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CpuFacts:
    model: str
    vendor: str
    arch: str
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    count: int
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MemoryFacts:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True, kw_only=True)
class NumaNodeFacts:
    id: int
    cpus: tuple[int, ...]
    memory_bytes: int


@dataclass(frozen=True, kw_only=True)
class DiskFacts:
    name: str
    size_bytes: int
    rotational: bool
    model: str = ""
    serial: str = ""
    wwid: str = ""


@dataclass(frozen=True, kw_only=True)
class NicFacts:
    name: str
    mac_address: str
    mtu: int
    up: bool
    speed_mbps: int = 0
    addresses: tuple[str, ...] = ()
    driver: str = ""


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """Inventory of this machine at ``collected_at`` (epoch seconds)."""

    hypervisor: HypervisorFacts
    cpu: CpuFacts
    memory: MemoryFacts
    numa_nodes: tuple[NumaNodeFacts, ...]
    disks: tuple[DiskFacts, ...]
    nics: tuple[NicFacts, ...]
    kernel: str
    os: str
    boot_time: float
    collected_at: float
    # Human-readable problems found while collecting (e.g. "libvirtd not reachable").
    problems: tuple[str, ...] = ()
    pci_devices: tuple[PciDevice, ...] = ()
