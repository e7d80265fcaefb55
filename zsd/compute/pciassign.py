"""Exclusive PCI assignment: may a VM have these host devices (whole functions or
VFs)? VFIO hands over whole IOMMU groups, so every other function of a device's
group must be free for it (unbound, on vfio-pci, a bridge, or the same VM's); a
device is one VM's at a time; a PF whose VFs are enabled stays with the host (its
VFs are what VMs get). Pure: the caller gives the inventory and who holds what."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zsd.errors import FailedPrecondition, NotFound
from zsd.host.pci import PciDevice

# Drivers VFIO accepts beside a device it hands over: none, its own, and pci-stub
# (the kernel's allow list).
_FREE_DRIVERS = ("", "vfio-pci", "pci-stub")
# PCI-to-PCI and CardBus bridges (root ports on pcieport, say): VFIO lets them share
# a group whatever their driver, being interconnect rather than DMA masters; and
# vfio-pci refuses to take one.
_BRIDGE_CLASSES = ("0x0604", "0x0607")


def _is_bridge(dev: PciDevice) -> bool:
    return dev.pci_class.startswith(_BRIDGE_CLASSES)


def check(
    vm: str,
    requested: Sequence[str],
    inventory: Sequence[PciDevice],
    held: Mapping[str, str],
    *,
    field: str = "vm.hostdevs",
) -> None:
    """Refuses (NotFound, FailedPrecondition) the first device of ``requested`` that
    ``vm`` may not have, naming it as ``field[i]`` and saying what blocks it.
    ``held``: PCI address -> the VM that has it now (``vm`` itself may be there)."""
    by_address = {d.address: d for d in inventory}
    for i, address in enumerate(requested):
        where = f"{field}[{i}]"
        dev = by_address.get(address)
        if dev is None:
            raise NotFound(
                f"no PCI device {address} on this host", field=where, reason="PCI_DEVICE_NOT_FOUND"
            )
        owner = held.get(address, vm)
        if owner != vm:
            raise FailedPrecondition(
                f"PCI device {address} is assigned to VM {owner}", field=where, reason="PCI_DEVICE_IN_USE"
            )
        if dev.iommu_group is None:
            raise FailedPrecondition(
                f"PCI device {address} has no IOMMU group (is the IOMMU on? intel_iommu=on / amd_iommu=on)",
                field=where,
                reason="NO_IOMMU_GROUP",
            )
        if _is_bridge(dev):
            raise FailedPrecondition(
                f"PCI device {address} is a bridge (class {dev.pci_class}): vfio-pci cannot take it; "
                "assign the devices behind it",
                field=where,
                reason="PCI_DEVICE_NOT_ASSIGNABLE",
            )
        if dev.is_pf and dev.num_vfs:
            raise FailedPrecondition(
                f"{address} is an SR-IOV PF with {dev.num_vfs} VFs enabled: assign a VF, or disable them",
                field=where,
                reason="PF_HAS_VFS",
            )
        for other in inventory:
            if other.address == address or other.iommu_group != dev.iommu_group:
                continue
            other_owner = held.get(other.address)
            if other.address in requested or other_owner == vm or _is_bridge(other):
                continue
            if other_owner is not None:
                raise FailedPrecondition(
                    f"PCI device {address} shares IOMMU group {dev.iommu_group} with {other.address}, "
                    f"which VM {other_owner} has",
                    field=where,
                    reason="IOMMU_GROUP_IN_USE",
                )
            if other.driver not in _FREE_DRIVERS:
                raise FailedPrecondition(
                    f"PCI device {address} shares IOMMU group {dev.iommu_group} with {other.address}, "
                    f"which the host uses (driver {other.driver}); assign the whole group or unbind it",
                    field=where,
                    reason="IOMMU_GROUP_IN_USE",
                )
