"""The host's PCI devices as passthrough sees them, read from sysfs: each function's
ids, driver, IOMMU group and SR-IOV role (PF with its VF count, or VF of a PF); and
enabling VFs on a PF. Everything takes the sysfs root, so tests use a fake tree
(``zsd.testing.fakesysfs``) and hosts use /sys."""

from __future__ import annotations

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


def _int(path: Path, default: int) -> int:
    raw = _text(path, str(default))
    try:
        return int(raw, 0)
    except ValueError:
        raise Internal(f"sysfs: {path} holds {raw!r}, not a number") from None


def _link_name(path: Path) -> str:
    return path.resolve().name if path.is_symlink() else ""


def device(address: str, *, sysfs: Path = SYS) -> PciDevice:
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
    """Enables ``count`` VFs on the PF ``address`` (0 disables them). The kernel only
    changes a non-zero count through 0, so that is written first."""
    dev = device(address, sysfs=sysfs)
    if not dev.is_pf:
        raise FailedPrecondition(
            f"{address} is not an SR-IOV physical function", field="address", reason="NOT_A_PF"
        )
    if not 0 <= count <= dev.total_vfs:
        raise InvalidArgument(
            f"must be between 0 and {dev.total_vfs} for {address}, got {count}", field="num_vfs"
        )
    path = _devices_dir(sysfs) / address / "sriov_numvfs"
    if dev.num_vfs == count:
        return dev
    if dev.num_vfs:
        path.write_text("0")
    if count:
        path.write_text(str(count))
    return device(address, sysfs=sysfs)
