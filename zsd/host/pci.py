"""The host's PCI devices as passthrough sees them, read from sysfs: each function's
ids, driver, IOMMU group and SR-IOV role (PF with its VF count, or VF of a PF); and
enabling VFs on a PF. Everything takes the sysfs root, so tests use a fake tree
(``zsd.testing.fakesysfs``) and hosts use /sys. Failures of sysfs itself become zsd
errors naming the file or the device, never a bare OSError."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zsd.errors import FailedPrecondition, Internal, InvalidArgument, NotFound

SYS = Path("/sys")
ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")


@dataclass(frozen=True, kw_only=True)
class PciDevice:
    address: str
    """DDDD:BB:SS.F"""
    vendor: str
    """"0x8086"."""
    device: str
    pci_class: str
    """"0x020000" (Ethernet)."""
    driver: str
    """Bound driver ("vfio-pci", "ixgbe"), "" when unbound."""
    numa_node: int
    iommu_group: int | None
    """None: no IOMMU group (IOMMU off): the device cannot be passed through."""
    total_vfs: int = 0
    """An SR-IOV PF: the most VFs it can have (0: not a PF)."""
    num_vfs: int = 0
    """An SR-IOV PF: the VFs enabled now."""
    physfn: str = ""
    """A VF: its PF's address."""

    @property
    def is_pf(self) -> bool:
        return self.total_vfs > 0

    @property
    def is_vf(self) -> bool:
        return bool(self.physfn)


def _devices_dir(sysfs: Path) -> Path:
    return sysfs / "bus" / "pci" / "devices"


def _text(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if default is None:
            raise Internal(f"sysfs: {path} is missing") from None
        return default
    except OSError as e:
        raise Internal(f"sysfs: cannot read {path}: {_errno_text(e)}") from None


def _errno_text(error: OSError) -> str:
    """What the kernel said, with its errno name: "Device or resource busy (EBUSY)"."""
    if error.errno is None:
        return str(error)
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{error.strerror or os.strerror(error.errno)} ({name})"


def _int(path: Path, default: int) -> int:
    raw = _text(path, str(default))
    try:
        return int(raw, 0)
    except ValueError:
        raise Internal(f"sysfs: {path} holds {raw!r}, not a number") from None


def _link_name(path: Path) -> str:
    return path.resolve().name if path.is_symlink() else ""


def device(address: str, *, sysfs: Path = SYS) -> PciDevice:
    # Checked first: the address becomes a path under sysfs.
    if not ADDRESS.fullmatch(address):
        raise InvalidArgument(
            f"{address!r} is not a PCI address like 0000:3b:00.1 (DDDD:BB:SS.F, lower-case hex)",
            field="address",
            reason="INVALID_PCI_ADDRESS",
        )
    root = _devices_dir(sysfs) / address
    if not root.exists():
        raise NotFound(
            f"no PCI device {address} on this host", field="address", reason="PCI_DEVICE_NOT_FOUND"
        )
    group = _link_name(root / "iommu_group")
    if group and not group.isdigit():
        raise Internal(f"sysfs: {root / 'iommu_group'} points to {group!r}, not a group number")
    return PciDevice(
        address=address,
        vendor=_text(root / "vendor"),
        device=_text(root / "device"),
        pci_class=_text(root / "class"),
        driver=_link_name(root / "driver"),
        numa_node=_int(root / "numa_node", -1),
        iommu_group=int(group) if group else None,
        total_vfs=_int(root / "sriov_totalvfs", 0),
        num_vfs=_int(root / "sriov_numvfs", 0),
        physfn=_link_name(root / "physfn"),
    )


def inventory(*, sysfs: Path = SYS) -> list[PciDevice]:
    """Every PCI function, by address (a host without PCI, e.g. a container: [])."""
    directory = _devices_dir(sysfs)
    if not directory.is_dir():
        return []
    return [device(p.name, sysfs=sysfs) for p in sorted(directory.iterdir()) if ADDRESS.match(p.name)]


def set_vfs(address: str, count: int, *, sysfs: Path = SYS) -> PciDevice:
    """Enables ``count`` VFs on the PF ``address`` (0 disables them) and returns the PF
    as sysfs then shows it; the count it already has changes nothing. The kernel only
    changes a non-zero count through 0, so that is written first. When the kernel
    refuses the new count after its VFs were removed, the old count is put back."""
    dev = device(address, sysfs=sysfs)
    if not dev.is_pf:
        raise FailedPrecondition(
            f"{address} is not an SR-IOV physical function", field="address", reason="NOT_A_PF"
        )
    if not 0 <= count <= dev.total_vfs:
        raise InvalidArgument(
            f"must be between 0 and {dev.total_vfs} for {address}, got {count}", field="count"
        )
    if dev.num_vfs == count:
        return dev
    path = _devices_dir(sysfs) / address / "sriov_numvfs"
    if dev.num_vfs:
        try:
            path.write_text("0")
        except OSError as e:
            raise _refused(dev, count, e, now=f"it keeps its {dev.num_vfs} VFs") from None
    if count:
        try:
            path.write_text(str(count))
        except OSError as e:
            raise _refused(dev, count, e, now=_put_back(path, dev.num_vfs)) from None
    return device(address, sysfs=sysfs)


def _put_back(path: Path, count: int) -> str:
    """Restores ``count`` VFs after a refused change; says what the PF has now."""
    if not count:
        return "it has no VFs, as before"
    try:
        path.write_text(str(count))
    except OSError as e:
        return f"its {count} VFs are gone: putting them back failed too ({_errno_text(e)})"
    return f"its {count} VFs were put back"


def _refused(dev: PciDevice, count: int, error: OSError, *, now: str) -> FailedPrecondition:
    verb = f"enable {count} VFs on" if count else "disable the VFs of"
    hint = _HINTS.get(error.errno or 0, "")
    return FailedPrecondition(
        f"the kernel refused to {verb} {dev.address}: {_errno_text(error)}{hint}; {now}",
        field="address",
        reason="VF_ENABLE_FAILED" if count else "VF_DISABLE_FAILED",
        metadata={"address": dev.address, "errno": errno.errorcode.get(error.errno or 0, "unknown")},
    )


# What refusals of sriov_numvfs usually mean: the kernel's own (drivers/pci/iov.c)
# and the common ones of PF drivers.
_HINTS = {
    errno.ENOENT: " (no driver is bound to the PF, or its driver cannot create VFs through sysfs)",
    errno.ENOMEM: " (not enough MMIO space or bus numbers for that many VFs; see the kernel log)",
    errno.EBUSY: " (the PF or one of its VFs is in use; see the kernel log)",
    errno.EPERM: " (the PF's driver forbids it, typically while a VF is assigned to a guest)",
}
