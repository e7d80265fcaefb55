"""Exclusive PCI assignment, rule by rule: what a VM may be given and, when not, an
error naming the request field and the device in the way. The inventory is built
by hand (the check is pure); one test reads it from a fake sysfs tree instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from zsd.compute import pciassign
from zsd.errors import FailedPrecondition, NotFound, ZsdError
from zsd.host import pci
from zsd.host.pci import PciDevice
from zsd.testing.fakesysfs import FakeSysfs

PF, PF_IDLE = "0000:3b:00.0", "0000:3c:00.0"
VF0, VF1 = "0000:3b:10.0", "0000:3b:10.2"
GPU, GPU_AUDIO = "0000:af:00.0", "0000:af:00.1"
ROOT_PORT, HBA = "0000:00:03.0", "0000:04:00.0"
FN0, FN1, FN2 = "0000:05:00.0", "0000:05:00.1", "0000:05:00.2"
NO_IOMMU = "0000:02:00.0"
MISSING = "0000:99:00.0"


def _dev(
    address: str,
    *,
    group: int | None,
    driver: str = "",
    pci_class: str = "0x020000",
    total_vfs: int = 0,
    num_vfs: int = 0,
    physfn: str = "",
) -> PciDevice:
    return PciDevice(
        address=address,
        vendor="0x8086",
        device="0x10fb",
        pci_class=pci_class,
        driver=driver,
        numa_node=0,
        iommu_group=group,
        total_vfs=total_vfs,
        num_vfs=num_vfs,
        physfn=physfn,
    )


INVENTORY = (
    _dev(PF, group=30, driver="ixgbe", total_vfs=8, num_vfs=2),
    _dev(PF_IDLE, group=33, driver="ixgbe", total_vfs=8),
    _dev(VF0, group=31, driver="vfio-pci", physfn=PF),
    _dev(VF1, group=32, driver="ixgbevf", physfn=PF),
    _dev(GPU, group=40, driver="vfio-pci", pci_class="0x030200"),
    _dev(GPU_AUDIO, group=40, driver="snd_hda_intel", pci_class="0x040300"),
    # No ACS below this root port: the port shares the HBA's group.
    _dev(ROOT_PORT, group=50, driver="pcieport", pci_class="0x060400"),
    _dev(HBA, group=50, driver="mpt3sas", pci_class="0x010700"),
    # A multi-function card: one function on the host driver, one unbound, one on pci-stub.
    _dev(FN0, group=60, driver="igb"),
    _dev(FN1, group=60),
    _dev(FN2, group=60, driver="pci-stub"),
    _dev(NO_IOMMU, group=None, driver="e1000e"),
)


def _check(requested: list[str], held: dict[str, str] | None = None, **kw: str) -> None:
    pciassign.check("vm1", requested, INVENTORY, held or {}, **kw)


@pytest.mark.parametrize(
    ("requested", "held"),
    [
        pytest.param([], {}, id="nothing"),
        pytest.param([VF0, VF1], {}, id="VFs, each its own group, on any driver (libvirt rebinds)"),
        pytest.param([VF0], {VF0: "vm1"}, id="already the VM's own"),
        pytest.param([VF0], {VF1: "vm2"}, id="a sibling VF is another VM's: other group"),
        pytest.param([PF_IDLE], {}, id="a PF with no VFs enabled, whole"),
        pytest.param([GPU, GPU_AUDIO], {}, id="the whole group together"),
        pytest.param([GPU], {GPU_AUDIO: "vm1"}, id="the rest of the group is the VM's already"),
        pytest.param([HBA], {}, id="a bridge shares the group"),
        pytest.param([FN1, FN0], {}, id="host-driver sibling requested too; others unbound or pci-stub"),
    ],
)
def test_allowed(requested: list[str], held: dict[str, str]) -> None:
    _check(requested, held)


@dataclass(frozen=True, kw_only=True)
class Refusal:
    error: type[ZsdError] = FailedPrecondition
    reason: str
    field: str = "vm.hostdevs[0]"
    says: str
    """A part of the message: what blocks the device."""


@pytest.mark.parametrize(
    ("requested", "held", "refusal"),
    [
        pytest.param(
            [VF0, MISSING],
            {},
            Refusal(
                error=NotFound,
                reason="PCI_DEVICE_NOT_FOUND",
                field="vm.hostdevs[1]",
                says=f"no PCI device {MISSING}",
            ),
            id="missing",
        ),
        pytest.param(
            [VF0],
            {VF0: "vm2"},
            Refusal(reason="PCI_DEVICE_IN_USE", says="assigned to VM vm2"),
            id="taken",
        ),
        pytest.param(
            [GPU, GPU_AUDIO],
            {GPU_AUDIO: "vm2"},
            Refusal(
                reason="PCI_DEVICE_IN_USE", field="vm.hostdevs[1]", says=f"{GPU_AUDIO} is assigned to VM vm2"
            ),
            id="a requested group member is taken",
        ),
        pytest.param(
            [NO_IOMMU],
            {},
            Refusal(reason="NO_IOMMU_GROUP", says="has no IOMMU group (is the IOMMU on? intel_iommu=on"),
            id="IOMMU off",
        ),
        pytest.param(
            [PF],
            {},
            Refusal(reason="PF_HAS_VFS", says="with 2 VFs enabled: assign a VF"),
            id="PF with VFs",
        ),
        pytest.param(
            [ROOT_PORT],
            {},
            Refusal(reason="PCI_DEVICE_NOT_ASSIGNABLE", says="is a bridge (class 0x060400)"),
            id="a bridge",
        ),
        pytest.param(
            [GPU],
            {},
            Refusal(
                reason="IOMMU_GROUP_IN_USE",
                says=f"shares IOMMU group 40 with {GPU_AUDIO}, which the host uses (driver snd_hda_intel)",
            ),
            id="group member on a host driver",
        ),
        pytest.param(
            [GPU],
            {GPU_AUDIO: "vm2"},
            Refusal(
                reason="IOMMU_GROUP_IN_USE", says=f"shares IOMMU group 40 with {GPU_AUDIO}, which VM vm2 has"
            ),
            id="group member is another VM's",
        ),
        pytest.param(
            [FN1],
            {},
            Refusal(reason="IOMMU_GROUP_IN_USE", says=f"with {FN0}, which the host uses (driver igb)"),
            id="unbound function beside a host-driver one",
        ),
    ],
)
def test_refused(requested: list[str], held: dict[str, str], refusal: Refusal) -> None:
    with pytest.raises(refusal.error) as refused:
        _check(requested, held)
    assert (refused.value.reason, refused.value.field) == (refusal.reason, refusal.field)
    assert refusal.says in refused.value.message
    # The field leads the text people see.
    assert str(refused.value).startswith(f"{refusal.field}: ")


def test_the_caller_names_the_field() -> None:
    with pytest.raises(NotFound) as refused:
        _check([VF0, MISSING], field="hostdevs")
    assert refused.value.field == "hostdevs[1]"


def test_the_first_refused_device_is_the_one_reported() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        _check([VF0, NO_IOMMU, PF])
    assert (refused.value.field, refused.value.reason) == ("vm.hostdevs[1]", "NO_IOMMU_GROUP")


def test_against_an_inventory_read_from_sysfs(tmp_path: Path) -> None:
    fake = FakeSysfs(tmp_path / "sys")
    fake.add(PF, driver="ixgbe", iommu_group=30, total_vfs=8, num_vfs=1)
    fake.add(VF0, driver="vfio-pci", iommu_group=31, physfn=PF)
    inventory = pci.inventory(sysfs=fake.root)
    pciassign.check("vm1", [VF0], inventory, {})
    with pytest.raises(FailedPrecondition, match="PF with 1 VFs enabled"):
        pciassign.check("vm1", [PF], inventory, {})
