"""The host PCI inventory read from a fake sysfs tree (PF, VFs, IOMMU groups, no
IOMMU, damaged files), and enabling VFs the way the kernel requires, its refusals
becoming zsd errors (never a bare OSError). The tree's own layout is tested in
test_fakesysfs, assignment rules in test_pciassign."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

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


def test_inventory(sysfs: FakeSysfs) -> None:
    devices = {d.address: d for d in pci.inventory(sysfs=sysfs.root)}
    assert list(devices) == sorted([PF, VF0, VF1, GPU, GPU_AUDIO, NIC])  # by address
    pf = devices[PF]
    assert (pf.is_pf, pf.is_vf, pf.total_vfs, pf.num_vfs, pf.driver, pf.iommu_group, pf.numa_node) == (
        True,
        False,
        8,
        2,
        "ixgbe",
        30,
        1,
    )
    vf = devices[VF0]
    assert (vf.is_vf, vf.is_pf, vf.physfn, vf.driver, vf.device, vf.iommu_group) == (
        True,
        False,
        PF,
        "vfio-pci",
        "0x10ed",
        31,
    )
    gpu = devices[GPU]
    assert (gpu.vendor, gpu.device, gpu.pci_class, gpu.iommu_group) == ("0x10de", "0x1eb8", "0x030200", 40)
    assert devices[GPU_AUDIO].iommu_group == 40  # the same group: VFIO hands both over or neither


def test_no_iommu_and_no_driver(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:03:00.0")  # unbound, no IOMMU
    devices = {d.address: d for d in pci.inventory(sysfs=sysfs.root)}
    assert (devices[NIC].iommu_group, devices[NIC].is_pf, devices[NIC].is_vf) == (None, False, False)
    assert (devices["0000:03:00.0"].driver, devices["0000:03:00.0"].iommu_group) == ("", None)


def test_a_host_without_pci_has_none(sysfs: FakeSysfs) -> None:
    assert pci.inventory(sysfs=sysfs.root / "nowhere") == []


def test_entries_that_are_not_addresses_are_skipped(sysfs: FakeSysfs) -> None:
    (sysfs.root / "bus/pci/devices/README").write_text("not a device\n")
    assert len(pci.inventory(sysfs=sysfs.root)) == 6


def test_numa_node_defaults_to_none_known(sysfs: FakeSysfs) -> None:
    (sysfs.device_dir(NIC) / "numa_node").unlink()
    assert pci.device(NIC, sysfs=sysfs.root).numa_node == -1


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        pytest.param(
            lambda d: (d / "sriov_numvfs").write_text("lots\n"), "sriov_numvfs holds 'lots'", id="numvfs"
        ),
        pytest.param(
            lambda d: (d / "sriov_totalvfs").write_text("\n"),
            "sriov_totalvfs holds '', not a number",
            id="totalvfs",
        ),
        pytest.param(lambda d: (d / "numa_node").write_text("zero\n"), "numa_node holds 'zero'", id="numa"),
        pytest.param(lambda d: (d / "vendor").unlink(), "vendor is missing", id="vendor"),
        pytest.param(lambda d: (d / "class").unlink(), "class is missing", id="class"),
        pytest.param(
            lambda d: ((d / "iommu_group").unlink(), os.symlink("../nowhere/group-x", d / "iommu_group")),
            "points to 'group-x', not a group number",
            id="iommu_group",
        ),
    ],
)
def test_damaged_sysfs_is_a_clear_error(sysfs: FakeSysfs, damage: object, says: str) -> None:
    damage(sysfs.device_dir(PF))  # type: ignore[operator]
    with pytest.raises(Internal, match=says) as raised:
        pci.device(PF, sysfs=sysfs.root)
    assert PF in raised.value.message  # which device's file it was
    with pytest.raises(Internal, match=says):
        pci.inventory(sysfs=sysfs.root)


def test_an_unknown_device_is_not_found(sysfs: FakeSysfs) -> None:
    with pytest.raises(NotFound) as missing:
        pci.device("0000:99:00.0", sysfs=sysfs.root)
    assert (missing.value.reason, missing.value.field) == ("PCI_DEVICE_NOT_FOUND", "address")


class KernelNumVfs:
    """sriov_numvfs as the kernel keeps it: every value written, in order, and a
    non-zero count refused over a non-zero one (EBUSY), so going through 0 is forced.
    ``refusing`` maps a value to the errno the PF's driver refuses it with."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.writes: list[str] = []
        self.refusing: dict[str, int] = {}
        self._write = Path.write_text

    def __call__(self, path: Path, text: str) -> int:
        if path.resolve() == self.path:  # by either name: the bus link or the device
            if int(text) and int(path.read_text()):
                raise OSError(errno.EBUSY, "Device or resource busy", str(path))
            if text in self.refusing:
                code = self.refusing[text]
                raise OSError(code, os.strerror(code), str(path))
            self.writes.append(text)
        return self._write(path, text)


@pytest.fixture
def kernel(sysfs: FakeSysfs, monkeypatch: pytest.MonkeyPatch) -> KernelNumVfs:
    fake = KernelNumVfs(sysfs.root / "bus/pci/devices" / PF / "sriov_numvfs")

    def write_text(self: Path, text: str) -> int:  # a method: bound to each Path
        return fake(self, text)

    monkeypatch.setattr(Path, "write_text", write_text)
    return fake


def test_enabling_vfs_goes_through_zero(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    assert pci.set_vfs(PF, 4, sysfs=sysfs.root).num_vfs == 4  # 2 -> 4
    assert kernel.writes == ["0", "4"]
    assert (sysfs.device_dir(PF) / "sriov_numvfs").read_text() == "4"
    assert pci.set_vfs(PF, 4, sysfs=sysfs.root).num_vfs == 4  # already: nothing written
    assert kernel.writes == ["0", "4"]
    assert pci.set_vfs(PF, 0, sysfs=sysfs.root).num_vfs == 0
    assert pci.set_vfs(PF, 3, sysfs=sysfs.root).num_vfs == 3  # from 0: straight to 3
    assert kernel.writes == ["0", "4", "0", "3"]
    assert pci.set_vfs(PF, 8, sysfs=sysfs.root).total_vfs == 8  # the most it has
    assert kernel.writes[-2:] == ["0", "8"]


def test_the_kernel_fake_refuses_a_direct_change(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    with pytest.raises(OSError, match="busy"):
        (sysfs.device_dir(PF) / "sriov_numvfs").write_text("4")


@pytest.mark.parametrize("count", [9, -1])
def test_a_count_out_of_range_says_what_is_allowed(sysfs: FakeSysfs, count: int) -> None:
    with pytest.raises(InvalidArgument) as bad:
        pci.set_vfs(PF, count, sysfs=sysfs.root)
    assert bad.value.field == "count"
    assert f"between 0 and 8 for {PF}, got {count}" in bad.value.message
    assert (sysfs.device_dir(PF) / "sriov_numvfs").read_text() == "2\n"  # untouched


@pytest.mark.parametrize("address", [GPU, VF0])
def test_only_a_pf_gets_vfs(sysfs: FakeSysfs, address: str) -> None:
    with pytest.raises(FailedPrecondition) as not_pf:
        pci.set_vfs(address, 1, sysfs=sysfs.root)
    assert (not_pf.value.reason, not_pf.value.field) == ("NOT_A_PF", "address")
    assert "not an SR-IOV physical function" in not_pf.value.message
    with pytest.raises(NotFound):
        pci.set_vfs("0000:99:00.0", 1, sysfs=sysfs.root)


def numvfs(sysfs: FakeSysfs) -> str:
    return (sysfs.device_dir(PF) / "sriov_numvfs").read_text().strip()


def test_a_refused_enable_names_the_device_and_the_errno(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    pci.set_vfs(PF, 0, sysfs=sysfs.root)
    kernel.refusing["8"] = errno.ENOMEM
    with pytest.raises(FailedPrecondition) as refused:
        pci.set_vfs(PF, 8, sysfs=sysfs.root)
    error = refused.value
    assert (error.reason, error.field, dict(error.metadata)) == (
        "VF_ENABLE_FAILED",
        "address",
        {"address": PF, "errno": "ENOMEM"},
    )
    assert error.message == (
        f"the kernel refused to enable 8 VFs on {PF}: Cannot allocate memory (ENOMEM) "
        "(not enough MMIO space or bus numbers for that many VFs; see the kernel log); "
        "it has no VFs, as before"
    )
    assert (kernel.writes, numvfs(sysfs)) == (["0"], "0")


def test_a_refused_change_puts_the_old_count_back(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    kernel.refusing["4"] = errno.EBUSY
    with pytest.raises(FailedPrecondition, match=r"Device or resource busy \(EBUSY\)") as refused:
        pci.set_vfs(PF, 4, sysfs=sysfs.root)  # 2 -> 0 -> 4 refused -> 2
    assert refused.value.message.endswith("its 2 VFs were put back")
    assert (kernel.writes, numvfs(sysfs)) == (["0", "2"], "2")


def test_a_failed_put_back_says_the_vfs_are_gone(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    kernel.refusing.update({"4": errno.ENOMEM, "2": errno.ENOMEM})
    with pytest.raises(FailedPrecondition) as refused:
        pci.set_vfs(PF, 4, sysfs=sysfs.root)
    assert refused.value.message.endswith(
        "its 2 VFs are gone: putting them back failed too (Cannot allocate memory (ENOMEM))"
    )
    assert pci.device(PF, sysfs=sysfs.root).num_vfs == 0  # what the PF really has now


def test_a_refused_disable_keeps_the_vfs(sysfs: FakeSysfs, kernel: KernelNumVfs) -> None:
    kernel.refusing["0"] = errno.EPERM
    with pytest.raises(FailedPrecondition) as refused:
        pci.set_vfs(PF, 0, sysfs=sysfs.root)
    error = refused.value
    assert (error.reason, error.metadata["errno"]) == ("VF_DISABLE_FAILED", "EPERM")
    assert error.message.startswith(f"the kernel refused to disable the VFs of {PF}: Operation not permitted")
    assert "while a VF is assigned to a guest" in error.message
    assert error.message.endswith("it keeps its 2 VFs")
    assert (kernel.writes, numvfs(sysfs)) == ([], "2")


def test_a_real_write_failure_is_translated_too(sysfs: FakeSysfs) -> None:
    # No fake kernel: sriov_numvfs dangles, so reading it says 0 and writing it fails
    # with a genuine ENOENT, as the kernel's "no driver bound" refusal would.
    d = sysfs.add("0000:5e:00.0", driver="ice", iommu_group=50, total_vfs=4)
    (d / "sriov_numvfs").unlink()
    os.symlink("gone/sriov_numvfs", d / "sriov_numvfs")
    with pytest.raises(
        FailedPrecondition, match=r"No such file or directory \(ENOENT\) \(no driver is bound"
    ):
        pci.set_vfs("0000:5e:00.0", 2, sysfs=sysfs.root)


def test_an_unreadable_sysfs_file_is_internal_not_oserror(sysfs: FakeSysfs) -> None:
    (sysfs.device_dir(PF) / "sriov_numvfs").unlink()
    (sysfs.device_dir(PF) / "sriov_numvfs").mkdir()
    with pytest.raises(Internal, match=r"cannot read .*0000:3b:00.0/sriov_numvfs: Is a directory \(EISDIR\)"):
        pci.set_vfs(PF, 4, sysfs=sysfs.root)


@pytest.mark.parametrize("address", ["../../../etc", "0000:3B:00.0", "0000:3b:00.0\n", "3b:00.0", ""])
def test_a_malformed_address_is_refused_before_touching_sysfs(sysfs: FakeSysfs, address: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        pci.set_vfs(address, 1, sysfs=sysfs.root)
    assert (bad.value.reason, bad.value.field) == ("INVALID_PCI_ADDRESS", "address")
    assert "like 0000:3b:00.1" in bad.value.message
