"""The fake sysfs tree itself: the PCI tests are only worth what the tree is, so it
must be laid out as the kernel lays out /sys — the same files, and symlinks with the
same relative targets (``ls -l /sys/bus/pci/devices/*/`` on a host with SR-IOV)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zsd.testing.fakesysfs import FakeSysfs

PF = "0000:3b:00.0"
VF0, VF1 = "0000:3b:10.0", "0000:3b:10.2"
GPU, GPU_AUDIO = "0000:af:00.0", "0000:af:00.1"


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys")


def test_a_device_is_a_directory_the_bus_links_to(sysfs: FakeSysfs) -> None:
    d = sysfs.add(GPU, vendor="0x10de", device="0x1eb8", pci_class="0x030200", numa_node=1)
    assert d == sysfs.root / "devices/pci0000:00" / GPU and d.is_dir() and not d.is_symlink()
    link = sysfs.root / "bus/pci/devices" / GPU
    assert os.readlink(link) == f"../../../devices/pci0000:00/{GPU}"
    assert link.resolve() == d.resolve()
    # One value a line, newline-terminated, as the kernel prints them.
    files = {name: (d / name).read_text() for name in ("vendor", "device", "class", "numa_node")}
    assert files == {"vendor": "0x10de\n", "device": "0x1eb8\n", "class": "0x030200\n", "numa_node": "1\n"}


def test_driver_link_only_when_bound(sysfs: FakeSysfs) -> None:
    bound = sysfs.add(GPU, driver="vfio-pci")
    unbound = sysfs.add(GPU_AUDIO)
    assert os.readlink(bound / "driver") == "../../../bus/pci/drivers/vfio-pci"
    assert (sysfs.root / "bus/pci/drivers/vfio-pci").is_dir()
    assert not (unbound / "driver").exists() and not (unbound / "driver").is_symlink()


def test_iommu_group_links_both_ways(sysfs: FakeSysfs) -> None:
    gpu = sysfs.add(GPU, iommu_group=40)
    sysfs.add(GPU_AUDIO, iommu_group=40)
    assert os.readlink(gpu / "iommu_group") == "../../../kernel/iommu_groups/40"
    members = sysfs.root / "kernel/iommu_groups/40/devices"
    assert sorted(p.name for p in members.iterdir()) == [GPU, GPU_AUDIO]
    assert os.readlink(members / GPU) == f"../../../../devices/pci0000:00/{GPU}"
    assert (members / GPU).resolve() == gpu.resolve()


def test_no_iommu_means_no_group_link(sysfs: FakeSysfs) -> None:
    d = sysfs.add(GPU)
    assert not (d / "iommu_group").is_symlink()
    assert list((sysfs.root / "kernel/iommu_groups").iterdir()) == []


def test_sriov_pf_and_its_vfs(sysfs: FakeSysfs) -> None:
    pf = sysfs.add(PF, driver="ixgbe", total_vfs=8, num_vfs=2)
    vf0 = sysfs.add(VF0, physfn=PF)
    vf1 = sysfs.add(VF1, physfn=PF)
    assert (pf / "sriov_totalvfs").read_text() == "8\n"
    assert (pf / "sriov_numvfs").read_text() == "2\n"
    # VFs point at their PF, the PF at its VFs, numbered in order of creation.
    assert os.readlink(vf0 / "physfn") == f"../{PF}" and (vf1 / "physfn").resolve() == pf.resolve()
    assert {p.name: os.readlink(p) for p in pf.glob("virtfn*")} == {
        "virtfn0": f"../{VF0}",
        "virtfn1": f"../{VF1}",
    }
    # VFs are not PFs themselves, and plain devices are neither.
    for d in (vf0, sysfs.add(GPU)):
        assert not (d / "sriov_totalvfs").exists() and not (d / "sriov_numvfs").exists()
    assert not (sysfs.device_dir(GPU) / "physfn").is_symlink()


def test_an_address_is_added_once(sysfs: FakeSysfs) -> None:
    sysfs.add(GPU)
    with pytest.raises(FileExistsError):
        sysfs.add(GPU)


def test_an_empty_tree_has_the_kernels_directories(sysfs: FakeSysfs) -> None:
    for sub in ("bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups", "devices/pci0000:00"):
        assert (sysfs.root / sub).is_dir()
    FakeSysfs(sysfs.root)  # a second builder on the same root is fine
