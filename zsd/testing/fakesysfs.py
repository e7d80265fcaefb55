"""A fake sysfs PCI tree in a directory, laid out as the kernel lays out /sys: devices
under ``devices/pci0000:00/``, ``bus/pci/devices/<addr>`` symlinks to them, ``driver``
and ``iommu_group`` symlinks, SR-IOV ``sriov_totalvfs``/``sriov_numvfs`` on PFs and
``physfn``/``virtfnN`` links between a PF and its VFs. For tests of code that reads
/sys on hosts with passthrough hardware (this machine has none)."""

from __future__ import annotations

import os
from pathlib import Path


class FakeSysfs:
    """A sysfs root (``root``) to pass where code takes ``sysfs=``; devices are added
    one by one, a PF before its VFs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._devices = root / "devices" / "pci0000:00"
        self._bus = root / "bus" / "pci" / "devices"
        for d in (
            self._devices,
            self._bus,
            root / "kernel" / "iommu_groups",
            root / "bus" / "pci" / "drivers",
        ):
            d.mkdir(parents=True, exist_ok=True)

    def device_dir(self, address: str) -> Path:
        return self._devices / address

    def add(
        self,
        address: str,
        *,
        vendor: str = "0x8086",
        device: str = "0x10fb",
        pci_class: str = "0x020000",
        driver: str = "",
        iommu_group: int | None = None,
        numa_node: int = 0,
        total_vfs: int = 0,
        num_vfs: int = 0,
        physfn: str = "",
    ) -> Path:
        """Adds the PCI function ``address``; returns its device directory. ``driver``
        "": unbound; ``iommu_group`` None: no IOMMU; ``total_vfs`` > 0: an SR-IOV PF
        (``num_vfs`` enabled now); ``physfn``: a VF of that (already added) PF, which
        gets the next ``virtfnN`` link."""
        d = self.device_dir(address)
        d.mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", pci_class)):
            (d / name).write_text(value + "\n")
        (d / "numa_node").write_text(f"{numa_node}\n")
        if driver:
            drv = self.root / "bus" / "pci" / "drivers" / driver
            drv.mkdir(exist_ok=True)
            os.symlink(os.path.relpath(drv, d), d / "driver")
        if iommu_group is not None:
            group = self.root / "kernel" / "iommu_groups" / str(iommu_group)
            (group / "devices").mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(group, d), d / "iommu_group")
            os.symlink(os.path.relpath(d, group / "devices"), group / "devices" / address)
        if total_vfs:
            (d / "sriov_totalvfs").write_text(f"{total_vfs}\n")
            (d / "sriov_numvfs").write_text(f"{num_vfs}\n")
        if physfn:
            pf = self.device_dir(physfn)
            os.symlink(os.path.relpath(pf, d), d / "physfn")
            index = len(list(pf.glob("virtfn*")))
            os.symlink(os.path.relpath(d, pf), pf / f"virtfn{index}")
        os.symlink(os.path.relpath(d, self._bus), self._bus / address)
        return d
