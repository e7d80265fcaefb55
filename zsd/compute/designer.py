"""The designer: a VM spec plus what this host offers → domain XML objects.

Policy lives here and only here: the target names per bus, the cache mode, which
NIC backend means which libvirt driver, KVM CPU modes, spare PCIe ports for
hot-plug, where console logs and UEFI variables go.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from zsd.compute import domxml, metadata
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec
from zsd.storage.qos import iotune_params

_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


@dataclass(frozen=True, kw_only=True)
class HostTraits:
    """What the designer needs to know about the host that will run the VM."""

    domain_type: str  # "kvm" or "qemu"
    emulator: str = "/usr/bin/qemu-system-x86_64"
    ovmf_code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    ovmf_vars: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    console_dir: Path
    nvram_dir: Path
    display_listen: str = "127.0.0.1"
    # q35 has no hot-plug slots of its own: one empty root port per future device.
    spare_pcie_ports: int = 8


DirectIo = Callable[[str], bool]
"""Whether a disk path's filesystem supports O_DIRECT (tmpfs does not)."""


def console_log(traits: HostTraits, spec: VmSpec) -> Path:
    return traits.console_dir / f"{spec.uid}.log"


def assign_targets(disks: tuple[DiskSpec, ...]) -> tuple[DiskSpec, ...]:
    """Gives each disk without one the first free target of its bus family (vda,
    vdb, ...; sata and scsi share sdX). Targets once given never change, so a disk
    keeps its name in the guest when others are unplugged."""
    taken = {d.target for d in disks if d.target}
    out = []
    for disk in disks:
        if disk.target:
            out.append(disk)
            continue
        prefix = _TARGET_PREFIX[disk.bus]
        index = 0
        while prefix + _letters(index) in taken:
            index += 1
        taken.add(prefix + _letters(index))
        out.append(replace(disk, target=prefix + _letters(index)))
    return tuple(out)


def target_prefix(bus: str) -> str:
    return _TARGET_PREFIX[bus]


def _letters(index: int) -> str:
    # 0 → a, 25 → z, 26 → aa (what libvirt and Linux use).
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = string.ascii_lowercase[rem] + out
    return out


def disk(spec: DiskSpec, *, direct_io: bool) -> domxml.Disk:
    params = iotune_params(spec.qos)
    return domxml.Disk(
        source_file=spec.path,
        target_dev=spec.target,
        bus=spec.bus,
        format=spec.format,
        # cache=none (O_DIRECT) keeps the host page cache out of the guest's way and is
        # what live migration on shared storage needs; writeback where O_DIRECT is absent.
        cache="none" if direct_io else "writeback",
        io="native" if direct_io else "",
        readonly=spec.readonly,
        boot_order=spec.boot_order,
        serial=spec.serial,
        iotune=domxml.IoTune(params=tuple((k, str(v)) for k, v in params.items())) if params else None,
        alias=f"ua-{spec.target}",
    )


def tap_name(mac: str) -> str:
    """The host interface of a VM's NIC: from its MAC, so the network layer finds a
    NIC's tap on whichever host its VM runs (and the name survives migration)."""
    return f"zt{mac.replace(':', '')[-10:]}"


def interface(spec: NicSpec) -> domxml.Interface:
    # Aliases name devices for hot-unplug; the MAC is the NIC's identity.
    alias = "ua-nic-" + spec.mac.replace(":", "")
    if spec.backend == "vhost-user":
        return domxml.Interface(
            kind="vhostuser",
            mac=spec.mac,
            model="virtio",
            socket_path=spec.socket_path,
            boot_order=spec.boot_order,
            mtu=spec.mtu,
            alias=alias,
        )
    driver = ""
    if spec.model == "virtio":
        driver = "vhost" if spec.backend == "vhost" else "qemu"
    return domxml.Interface(
        # Without a bridge the tap is zsd's to plug (the network layer does it).
        kind="bridge" if spec.bridge else "ethernet",
        mac=spec.mac,
        model=spec.model,
        bridge=spec.bridge,
        tap=tap_name(spec.mac),
        driver=driver,
        boot_order=spec.boot_order,
        mtu=spec.mtu,
        alias=alias,
    )


def pci_address(text: str) -> domxml.PciAddress:
    dom, bus, rest = text.split(":")
    slot, function = rest.split(".")
    return domxml.PciAddress(
        domain=int(dom, 16), bus=int(bus, 16), slot=int(slot, 16), function=int(function, 16)
    )


def design(
    spec: VmSpec,
    traits: HostTraits,
    *,
    direct_io: DirectIo,
    generation: int = 1,
    leases: tuple[domxml.Lease, ...] = (),
) -> domxml.Domain:
    """The domain for ``spec`` (already validated) on a host with ``traits``; its VM
    lease (``spec.lease_path``) comes after any given in ``leases``."""
    if spec.lease_path:
        leases = (*leases, domxml.Lease(lockspace=spec.lease_lockspace, key=spec.uid, path=spec.lease_path))
    # The metadata must describe the devices as defined, targets included.
    spec = spec.with_disks(assign_targets(spec.disks))
    disks = tuple(disk(d, direct_io=direct_io(d.path)) for d in spec.disks)
    firmware = None
    if spec.firmware == "uefi":
        firmware = domxml.Firmware(
            loader=traits.ovmf_code,
            nvram_template=traits.ovmf_vars,
            nvram=str(traits.nvram_dir / f"{spec.uid}_VARS.fd"),
        )
    topology = None
    if spec.sockets:
        topology = domxml.CpuTopology(sockets=spec.sockets, cores=spec.cores, threads=spec.threads)
    graphics = None
    if spec.graphics != "none":
        graphics = domxml.Graphics(kind=spec.graphics, listen=traits.display_listen)
    return domxml.Domain(
        kind=traits.domain_type,
        name=spec.name,
        uuid=spec.uid,
        title=spec.description[:80],
        memory_kib=spec.memory_mib * 1024,
        vcpus=spec.vcpus,
        os=domxml.Os(machine=spec.machine, firmware=firmware),
        # host-model keeps live migration between unlike hosts possible; TCG has no host CPU.
        cpu=domxml.Cpu(mode="host-model" if traits.domain_type == "kvm" else "", topology=topology),
        devices=domxml.Devices(
            emulator=traits.emulator,
            disks=disks,
            interfaces=tuple(interface(n) for n in spec.nics),
            hostdevs=tuple(
                domxml.HostdevPci(address=pci_address(a), alias=f"ua-hostdev{i}")
                for i, a in enumerate(spec.hostdevs)
            ),
            leases=leases,
            serial=domxml.SerialConsole(log_file=str(console_log(traits, spec))),
            graphics=graphics,
            scsi_controller=any(d.bus == "scsi" for d in spec.disks),
            video="vga" if graphics is not None else "",
            pcie_root_ports=traits.spare_pcie_ports if spec.machine == "q35" else 0,
        ),
        metadata=(metadata.element(metadata.VmFacts(spec=spec, generation=generation)),),
    )
