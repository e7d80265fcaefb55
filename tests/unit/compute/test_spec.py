"""VM spec validation: each bad field is refused with its dotted name and a reason
that says what is allowed; good specs pass unchanged and survive JSON."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zsd.compute.spec import DiskSpec, NicSpec, VmSpec, validate
from zsd.errors import InvalidArgument
from zsd.storage.model import Qos

UID = "6f1c1f0e-0c43-4b8e-9a54-1d7c4f7e2a10"
GOOD = VmSpec(
    name="vm-1",
    uid=UID,
    vcpus=4,
    sockets=2,
    cores=2,
    threads=1,
    disks=(DiskSpec(path="/p/a.qcow2", boot_order=1), DiskSpec(path="/p/b.raw", format="raw", bus="sata")),
    nics=(NicSpec(mac="52:54:00:00:00:01", bridge="br0", boot_order=2),),
    hostdevs=("0000:3b:00.1",),
    group="web",
)


def test_a_good_spec_passes_and_round_trips_through_json() -> None:
    assert validate(GOOD) is GOOD
    assert VmSpec.from_json(GOOD.to_json()) == GOOD


def test_json_from_a_newer_zsd_with_unknown_fields_still_reads() -> None:
    text = GOOD.to_json().replace('"vcpus":4', '"vcpus":4,"future_field":1')
    assert VmSpec.from_json(text) == GOOD


BAD: list[tuple[str, VmSpec, str, str]] = [
    ("path separator in name", replace(GOOD, name="a/b"), "vm.name", ""),
    ("dot-dot name", replace(GOOD, name=".."), "vm.name", ""),
    ("markup in name", replace(GOOD, name="<x>"), "vm.name", ""),
    ("uppercase uid", replace(GOOD, uid=UID.upper()), "vm.uid", "UUID"),
    ("zero vcpus", replace(GOOD, vcpus=0, sockets=0, cores=0, threads=0), "vm.vcpus", "between 1 and"),
    ("topology mismatch", replace(GOOD, threads=2), "vm.sockets", "must equal vcpus"),
    ("partial topology", replace(GOOD, sockets=0), "vm.sockets", "together"),
    ("tiny memory", replace(GOOD, memory_mib=8), "vm.memory_mib", "between 16"),
    ("machine", replace(GOOD, machine="virt"), "vm.machine", "pc, q35"),
    ("firmware", replace(GOOD, firmware="coreboot"), "vm.firmware", "bios, uefi"),
    ("graphics", replace(GOOD, graphics="rdp"), "vm.graphics", "none, vnc, spice"),
    ("relative disk", replace(GOOD, disks=(DiskSpec(path="a.qcow2"),)), "vm.disks[0].path", "absolute"),
    (
        "disk format",
        replace(GOOD, disks=(DiskSpec(path="/a", format="vmdk"),)),
        "vm.disks[0].format",
        "qcow2, raw",
    ),
    ("disk bus", replace(GOOD, disks=(DiskSpec(path="/a", bus="usb"),)), "vm.disks[0].bus", "virtio"),
    (
        "ide on q35",
        replace(GOOD, machine="q35", disks=(DiskSpec(path="/a", bus="ide"),)),
        "vm.disks[0].bus",
        "no IDE",
    ),
    (
        "target of another bus",
        replace(GOOD, disks=(DiskSpec(path="/a", target="sda"),)),
        "vm.disks[0].target",
        "virtio device name",
    ),
    (
        "serial with spaces",
        replace(GOOD, disks=(DiskSpec(path="/a", serial="a b"),)),
        "vm.disks[0].serial",
        "letters",
    ),
    (
        "negative QoS",
        replace(GOOD, disks=(DiskSpec(path="/a", qos=Qos(total_iops=-1)),)),
        "vm.disks[0].qos.total_iops",
        "",
    ),
    ("same disk twice", replace(GOOD, disks=(DiskSpec(path="/a"), DiskSpec(path="/a"))), "vm.disks", "twice"),
    (
        "upper-case MAC",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:0A"),)),
        "vm.nics[0].mac",
        "lowercase",
    ),
    ("multicast MAC", replace(GOOD, nics=(NicSpec(mac="01:00:5e:00:00:01"),)), "vm.nics[0].mac", "multicast"),
    (
        "NIC model",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", model="ne2k"),)),
        "vm.nics[0].model",
        "",
    ),
    (
        "vhost on e1000",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", model="e1000"),)),
        "vm.nics[0].backend",
        "needs model virtio",
    ),
    (
        "vhost-user without socket",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", backend="vhost-user"),)),
        "vm.nics[0].socket_path",
        "socket",
    ),
    (
        "bridge name injection",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", bridge="br0'/><x"),)),
        "vm.nics[0].bridge",
        "interface name",
    ),
    ("MTU", replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", mtu=100),)), "vm.nics[0].mtu", "576"),
    (
        "boot order clash",
        replace(GOOD, nics=(NicSpec(mac="52:54:00:00:00:01", boot_order=1),)),
        "vm.boot_order",
        "unique",
    ),
    ("PCI address", replace(GOOD, hostdevs=("3b:00.1",)), "vm.hostdevs[0]", "PCI address"),
    ("same PCI device twice", replace(GOOD, hostdevs=("0000:3b:00.1",) * 2), "vm.hostdevs", "twice"),
    ("long description", replace(GOOD, description="x" * 1025), "vm.description", "1024"),
]


@pytest.mark.parametrize(("case", "spec", "field", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_specs_name_the_field(case: str, spec: VmSpec, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    assert info.value.field == field, case
    assert words in info.value.message, info.value.message


def test_the_prefix_names_the_request_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(replace(GOOD, vcpus=999, sockets=0, cores=0, threads=0), prefix="vm_spec")
    assert info.value.field == "vm_spec.vcpus"
