"""What a VM is, independent of libvirt: the spec zsd stores and the designer turns
into domain XML. ``validate`` checks every field and names the one at fault.

The spec also travels inside the domain's <metadata> (as JSON), so a restarted zsd
knows each running domain's spec without asking anyone.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from zsd.errors import InvalidArgument
from zsd.storage import validate as storage_validate
from zsd.storage.model import Qos

DISK_BUSES = ("virtio", "scsi", "sata", "ide")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
# vhost: the kernel's vhost-net does the virtio datapath; qemu: QEMU's userspace
# virtio; vhost-user: a DPDK/SPDK process serves the queues through a unix socket.
NIC_BACKENDS = ("vhost", "qemu", "vhost-user")
MACHINES = ("pc", "q35")
FIRMWARES = ("bios", "uefi")
GRAPHICS = ("none", "vnc", "spice")
MAX_VCPUS = 255  # i440fx/q35 without an IOMMU for x2APIC
MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 4 * 1024 * 1024
MAX_DISKS = 24
MAX_NICS = 16
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_PCI = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")
_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TARGETS = {"virtio": r"vd[a-z]{1,2}", "scsi": r"sd[a-z]{1,2}", "sata": r"sd[a-z]{1,2}", "ide": r"hd[a-d]"}
_BRIDGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True, kw_only=True)
class DiskSpec:
    path: str
    """The volume's file (the storage layer resolves pool/volume to it)."""
    volume: str = ""
    """"pool/volume", for people and for delete-with-volumes."""
    format: str = "qcow2"
    bus: str = "virtio"
    readonly: bool = False
    boot_order: int = 0
    qos: Qos = field(default_factory=Qos)
    serial: str = ""
    target: str = ""
    """The guest device name (vda, sdb, ...); given once at create/attach if empty."""


@dataclass(frozen=True, kw_only=True)
class NicSpec:
    mac: str
    model: str = "virtio"
    backend: str = "vhost"
    bridge: str = ""
    """The Linux bridge the tap joins (a port group's bridge on this host)."""
    socket_path: str = ""
    """vhost-user only: the backend's unix socket."""
    network: str = ""
    """The port group, for people (the network issue resolves it to a bridge)."""
    boot_order: int = 0
    mtu: int = 0
    nic: str = ""
    """The network's NIC (``nics/{nic}`` without the prefix) whose MAC and port group
    this is; empty for a NIC on a bridge given by hand."""


@dataclass(frozen=True, kw_only=True)
class VmSpec:
    name: str
    uid: str
    vcpus: int = 1
    # Guest CPU topology; 0 = let it follow vcpus (one socket per vCPU, as QEMU does).
    sockets: int = 0
    cores: int = 0
    threads: int = 0
    memory_mib: int = 512
    machine: str = "pc"
    firmware: str = "bios"
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    hostdevs: tuple[str, ...] = ()
    """PCI addresses (DDDD:BB:SS.F) of host devices or VFs given to the VM."""
    graphics: str = "vnc"
    ha: bool = False
    group: str = ""
    description: str = ""
    lease_lockspace: str = ""
    lease_path: str = ""
    """HA VMs on hosts whose libvirt uses sanlock: the VM's resource lease (key: its
    uid) on shared storage, held by libvirt for QEMU while the VM runs, so the VM
    can never run on two hosts. Empty: no lease."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VmSpec:
        raw: dict[str, Any] = json.loads(text)
        disks = tuple(DiskSpec(**{**d, "qos": Qos(**d.get("qos", {}))}) for d in raw.pop("disks", ()))
        nics = tuple(NicSpec(**n) for n in raw.pop("nics", ()))
        known = {f.name for f in fields(cls)}
        return cls(
            **{k: v for k, v in raw.items() if k in known and k not in ("hostdevs",)},
            hostdevs=tuple(raw.get("hostdevs", ())),
            disks=disks,
            nics=nics,
        )

    def with_disks(self, disks: tuple[DiskSpec, ...]) -> VmSpec:
        return replace(self, disks=disks)

    def with_nics(self, nics: tuple[NicSpec, ...]) -> VmSpec:
        return replace(self, nics=nics)


def _bad(field_: str, message: str, reason: str = "BAD_VM_SPEC") -> InvalidArgument:
    return InvalidArgument(message, field=field_, reason=reason)


def _choice(value: str, allowed: tuple[str, ...], field_: str) -> None:
    if value not in allowed:
        raise _bad(field_, f"{value!r} is not one of {', '.join(allowed)}")


def _range(value: int, low: int, high: int, field_: str) -> None:
    if not low <= value <= high:
        raise _bad(field_, f"must be between {low} and {high}, got {value}")


def validate(spec: VmSpec, *, prefix: str = "vm") -> VmSpec:
    """Every field of ``spec`` checked; errors name ``prefix.field``. Returns the spec."""
    storage_validate.name(spec.name, field=f"{prefix}.name")
    if not _UID.fullmatch(spec.uid):
        raise _bad(f"{prefix}.uid", f"{spec.uid!r} is not a lowercase UUID")
    _range(spec.vcpus, 1, MAX_VCPUS, f"{prefix}.vcpus")
    _topology(spec, prefix)
    _range(spec.memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, f"{prefix}.memory_mib")
    _choice(spec.machine, MACHINES, f"{prefix}.machine")
    _choice(spec.firmware, FIRMWARES, f"{prefix}.firmware")
    _choice(spec.graphics, GRAPHICS, f"{prefix}.graphics")
    if len(spec.disks) > MAX_DISKS:
        raise _bad(f"{prefix}.disks", f"at most {MAX_DISKS} disks, got {len(spec.disks)}")
    if len(spec.nics) > MAX_NICS:
        raise _bad(f"{prefix}.nics", f"at most {MAX_NICS} NICs, got {len(spec.nics)}")
    for i, disk in enumerate(spec.disks):
        validate_disk(disk, prefix=f"{prefix}.disks[{i}]", machine=spec.machine)
    for i, nic in enumerate(spec.nics):
        validate_nic(nic, prefix=f"{prefix}.nics[{i}]")
    _unique([d.path for d in spec.disks], f"{prefix}.disks", "path")
    _unique([d.target for d in spec.disks if d.target], f"{prefix}.disks", "target")
    _unique([n.mac for n in spec.nics], f"{prefix}.nics", "mac")
    orders = [d.boot_order for d in spec.disks if d.boot_order] + [
        n.boot_order for n in spec.nics if n.boot_order
    ]
    if len(orders) != len(set(orders)):
        raise _bad(
            f"{prefix}.boot_order", f"boot orders must be unique across disks and NICs, got {sorted(orders)}"
        )
    for i, address in enumerate(spec.hostdevs):
        if not _PCI.fullmatch(address):
            raise _bad(f"{prefix}.hostdevs[{i}]", f"{address!r} is not a PCI address like 0000:3b:00.1")
    _unique(list(spec.hostdevs), f"{prefix}.hostdevs", "address")
    if spec.group:
        storage_validate.name(spec.group, field=f"{prefix}.group")
    if spec.lease_path and (not spec.lease_path.startswith("/") or not spec.lease_lockspace):
        raise _bad(f"{prefix}.lease_path", "an absolute path, with lease_lockspace set")
    if len(spec.description) > 1024:
        raise _bad(f"{prefix}.description", "at most 1024 characters")
    return spec


def _topology(spec: VmSpec, prefix: str) -> None:
    parts = (spec.sockets, spec.cores, spec.threads)
    if parts == (0, 0, 0):
        return
    if 0 in parts:
        raise _bad(f"{prefix}.sockets", "set sockets, cores and threads together (or none of them)")
    if spec.sockets * spec.cores * spec.threads != spec.vcpus:
        raise _bad(
            f"{prefix}.sockets",
            f"sockets x cores x threads ({spec.sockets}x{spec.cores}x{spec.threads}) "
            f"must equal vcpus ({spec.vcpus})",
        )


def _unique(values: list[str], field_: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _bad(field_, f"{what} {value!r} appears twice")
        seen.add(value)


def validate_disk(disk: DiskSpec, *, prefix: str, machine: str) -> None:
    if not disk.path.startswith("/") or "\x00" in disk.path:
        raise _bad(f"{prefix}.path", f"{disk.path!r} is not an absolute path")
    _choice(disk.format, ("qcow2", "raw"), f"{prefix}.format")
    _choice(disk.bus, DISK_BUSES, f"{prefix}.bus")
    if disk.bus == "ide" and machine == "q35":
        raise _bad(f"{prefix}.bus", "q35 machines have no IDE bus: use sata, scsi or virtio")
    _range(disk.boot_order, 0, 64, f"{prefix}.boot_order")
    storage_validate.qos(disk.qos, field=f"{prefix}.qos")
    if disk.target and not re.fullmatch(_TARGETS[disk.bus], disk.target):
        raise _bad(
            f"{prefix}.target", f"{disk.target!r} is not a {disk.bus} device name ({_TARGETS[disk.bus]})"
        )
    if disk.serial and not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", disk.serial):
        raise _bad(f"{prefix}.serial", "1-20 of letters, digits, '_' or '-'")


def validate_nic(nic: NicSpec, *, prefix: str) -> None:
    if not _MAC.fullmatch(nic.mac):
        raise _bad(f"{prefix}.mac", f"{nic.mac!r} is not a MAC address like 52:54:00:12:34:56 (lowercase)")
    if int(nic.mac[:2], 16) & 1:
        raise _bad(f"{prefix}.mac", f"{nic.mac} is a multicast address")
    _choice(nic.model, NIC_MODELS, f"{prefix}.model")
    _choice(nic.backend, NIC_BACKENDS, f"{prefix}.backend")
    if nic.backend != "qemu" and nic.model != "virtio":
        raise _bad(f"{prefix}.backend", f"backend {nic.backend} needs model virtio (got {nic.model})")
    if nic.backend == "vhost-user":
        if not nic.socket_path.startswith("/"):
            raise _bad(f"{prefix}.socket_path", "vhost-user needs the backend's absolute socket path")
        if nic.bridge:
            raise _bad(f"{prefix}.bridge", "a vhost-user NIC is not on a bridge (its backend switches)")
    else:
        if nic.socket_path:
            raise _bad(f"{prefix}.socket_path", "only vhost-user NICs have a socket")
        if nic.bridge and not _BRIDGE.fullmatch(nic.bridge):
            raise _bad(f"{prefix}.bridge", f"{nic.bridge!r} is not an interface name (1-15 of A-Za-z0-9_.-)")
    _range(nic.boot_order, 0, 64, f"{prefix}.boot_order")
    if nic.nic:
        storage_validate.name(nic.nic, field=f"{prefix}.nic")
    if nic.mtu:
        _range(nic.mtu, 576, 65535, f"{prefix}.mtu")
