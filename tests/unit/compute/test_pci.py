"""PCI passthrough against a fake sysfs tree: the tree's own layout (as the kernel
lays out /sys), the inventory read from it, enabling VFs, and exclusive assignment
with VFIO's IOMMU-group rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zsd.compute import pciassign
from zsd.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from zsd.host import pci
from zsd.testing.fakesysfs import FakeSysfs

PF = "0000:3b:00.0"
VF0, VF1 = "0000:3b:10.0", "0000:3b:10.2"
GPU, GPU_AUDIO = "0000:af:00.0", "0000:af:00.1"
NIC = "0000:02:00.0"


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    fake = FakeSysfs(tmp_path / "sys")
    fake.add(PF, driver="ixgbe", iommu_group=30, total_vfs=8, num_vfs=2, numa_node=1)
    fake.add(VF0, device="0x10ed", driver="vfio-pci", iommu_group=31, physfn=PF)
    fake.add(VF1, device="0x10ed", driver="ixgbevf", iommu_group=32, physfn=PF)
    fake.add(GPU, vendor="0x10de", device="0x1eb8", pci_class="0x030200", driver="vfio-pci", iommu_group=40)
    fake.add(GPU_AUDIO, vendor="0x10de", pci_class="0x040300", driver="snd_hda_intel", iommu_group=40)
    fake.add(NIC, driver="e1000e")  # no IOMMU group: IOMMU off for it
    return fake


def test_the_fake_tree_is_laid_out_like_the_kernels(sysfs: FakeSysfs) -> None:
    root = sysfs.root
    bus = root / "bus/pci/devices" / VF0
    assert bus.is_symlink() and bus.resolve() == (root / "devices/pci0000:00" / VF0).resolve()
    assert (bus / "driver").resolve() == (root / "bus/pci/drivers/vfio-pci").resolve()
    assert (bus / "iommu_group").resolve() == (root / "kernel/iommu_groups/31").resolve()
    assert (root / "kernel/iommu_groups/40/devices" / GPU_AUDIO).resolve() == bus.parent.joinpath(
        GPU_AUDIO
    ).resolve()
    assert (bus / "physfn").resolve().name == PF
    pf = root / "bus/pci/devices" / PF
    assert sorted(os.readlink(v).rsplit("/", 1)[-1] for v in pf.glob("virtfn*")) == [VF0, VF1]
    assert (pf / "sriov_totalvfs").read_text() == "8\n" and (pf / "class").read_text() == "0x020000\n"


def test_inventory(sysfs: FakeSysfs) -> None:
    devices = {d.address: d for d in pci.inventory(sysfs=sysfs.root)}
    assert sorted(devices) == sorted([PF, VF0, VF1, GPU, GPU_AUDIO, NIC])
    pf = devices[PF]
    assert (pf.is_pf, pf.total_vfs, pf.num_vfs, pf.driver, pf.iommu_group, pf.numa_node) == (
        True,
        8,
        2,
        "ixgbe",
        30,
        1,
    )
    assert (devices[VF0].is_vf, devices[VF0].physfn, devices[VF0].driver) == (True, PF, "vfio-pci")
    assert (devices[GPU].vendor, devices[GPU].pci_class) == ("0x10de", "0x030200")
    assert devices[NIC].iommu_group is None and not devices[NIC].is_pf
    assert pci.inventory(sysfs=sysfs.root / "nowhere") == []


def test_malformed_sysfs_is_a_clear_error(sysfs: FakeSysfs) -> None:
    (sysfs.device_dir(PF) / "sriov_numvfs").write_text("lots\n")
    with pytest.raises(Internal, match="sriov_numvfs holds 'lots'"):
        pci.device(PF, sysfs=sysfs.root)
    (sysfs.device_dir(NIC) / "vendor").unlink()
    with pytest.raises(Internal, match="vendor is missing"):
        pci.device(NIC, sysfs=sysfs.root)
    with pytest.raises(NotFound) as missing:
        pci.device("0000:99:00.0", sysfs=sysfs.root)
    assert missing.value.reason == "PCI_DEVICE_NOT_FOUND"


class Recording:
    """sriov_numvfs as a FIFO would see it: every value written, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes: list[str] = []
        self._write = Path.write_text

    def __call__(self, path: Path, text: str) -> int:
        if path == self.path:
            self.writes.append(text)
        return self._write(path, text)


def test_enabling_vfs_goes_through_zero(sysfs: FakeSysfs, monkeypatch: pytest.MonkeyPatch) -> None:
    record = Recording(sysfs.root / "bus/pci/devices" / PF / "sriov_numvfs")

    def write_text(self: Path, text: str) -> int:  # a method: bound to each Path
        return record(self, text)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert pci.set_vfs(PF, 4, sysfs=sysfs.root).num_vfs == 4
    assert record.writes == ["0", "4"]  # the kernel refuses N -> M without 0 between
    assert pci.set_vfs(PF, 4, sysfs=sysfs.root).num_vfs == 4 and record.writes == ["0", "4"]
    assert pci.set_vfs(PF, 0, sysfs=sysfs.root).num_vfs == 0
    assert pci.set_vfs(PF, 3, sysfs=sysfs.root).num_vfs == 3 and record.writes == ["0", "4", "0", "3"]


def test_enabling_vfs_checks_the_device_and_the_count(sysfs: FakeSysfs) -> None:
    with pytest.raises(InvalidArgument, match="between 0 and 8") as bad:
        pci.set_vfs(PF, 9, sysfs=sysfs.root)
    assert bad.value.field == "num_vfs"
    with pytest.raises(FailedPrecondition) as not_pf:
        pci.set_vfs(GPU, 1, sysfs=sysfs.root)
    assert not_pf.value.reason == "NOT_A_PF"


@pytest.mark.parametrize(
    ("requested", "held", "reason", "field"),
    [
        ([VF0, "0000:99:00.0"], {}, "PCI_DEVICE_NOT_FOUND", "vm.hostdevs[1]"),
        ([VF0], {VF0: "other"}, "PCI_DEVICE_IN_USE", "vm.hostdevs[0]"),
        ([NIC], {}, "NO_IOMMU_GROUP", "vm.hostdevs[0]"),
        ([PF], {}, "PF_HAS_VFS", "vm.hostdevs[0]"),
        # The GPU's audio function is the host's (snd_hda_intel): the group is not free.
        ([GPU], {}, "IOMMU_GROUP_IN_USE", "vm.hostdevs[0]"),
        ([GPU], {GPU_AUDIO: "other"}, "IOMMU_GROUP_IN_USE", "vm.hostdevs[0]"),
    ],
)
def test_assignment_refusals_name_the_device(
    sysfs: FakeSysfs, requested: list[str], held: dict[str, str], reason: str, field: str
) -> None:
    with pytest.raises((FailedPrecondition, NotFound)) as refused:
        pciassign.check("vm1", requested, pci.inventory(sysfs=sysfs.root), held)
    assert (refused.value.reason, refused.value.field) == (reason, field)


def test_allowed_assignments(sysfs: FakeSysfs) -> None:
    inventory = pci.inventory(sysfs=sysfs.root)
    pciassign.check("vm1", [VF0, VF1], inventory, {})  # VFs, each its own group
    pciassign.check("vm1", [VF0], inventory, {VF0: "vm1"})  # already its own
    pciassign.check("vm1", [GPU, GPU_AUDIO], inventory, {})  # the whole group together
    pciassign.check("vm1", [GPU], inventory, {GPU_AUDIO: "vm1"})  # the rest is the VM's already
