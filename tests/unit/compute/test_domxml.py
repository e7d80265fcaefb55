"""Domain XML from the object model: golden files (exact text) that libvirt's own
schema accepts, plus the properties the designer promises (stable targets,
escaping, cache mode by filesystem).

ZSD_UPDATE_GOLDEN=1 rewrites the golden files; review the diff before committing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from zsd.compute import designer, metadata
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec, validate
from zsd.storage.model import Qos

GOLDEN = Path(__file__).parent / "golden"
UID = "6f1c1f0e-0c43-4b8e-9a54-1d7c4f7e2a10"
TRAITS = designer.HostTraits(
    domain_type="kvm", console_dir=Path("/var/log/zsd/console"), nvram_dir=Path("/var/lib/zsd/nvram")
)


def _bios_vm() -> VmSpec:
    return VmSpec(
        name="web-1",
        uid=UID,
        vcpus=2,
        memory_mib=1024,
        disks=(
            DiskSpec(path="/pools/p/vols/root.qcow2", volume="p/root", boot_order=1),
            DiskSpec(
                path="/pools/p/vols/data.raw",
                volume="p/data",
                format="raw",
                qos=Qos(total_iops=500, total_iops_max=1000, burst_seconds=10),
                serial="data-1",
            ),
        ),
        nics=(NicSpec(mac="52:54:00:aa:bb:01", bridge="zsw-prod"),),
        description="front end",
    )


def _q35_vm() -> VmSpec:
    return VmSpec(
        name="db-1",
        uid=UID,
        vcpus=4,
        sockets=1,
        cores=2,
        threads=2,
        memory_mib=4096,
        machine="q35",
        firmware="uefi",
        graphics="spice",
        disks=(
            DiskSpec(path="/pools/p/vols/db.qcow2", bus="scsi", boot_order=1),
            DiskSpec(path="/pools/p/vols/iso.raw", format="raw", bus="sata", readonly=True),
        ),
        nics=(
            NicSpec(mac="52:54:00:aa:bb:02", model="e1000e", backend="qemu", bridge="zsw-a", mtu=9000),
            NicSpec(mac="52:54:00:aa:bb:03", backend="qemu", boot_order=2),
            NicSpec(mac="52:54:00:aa:bb:04", backend="vhost-user", socket_path="/run/dpdk/vhu0.sock"),
        ),
    )


def _ha_vm() -> VmSpec:
    """An HA VM with its sanlock VM lease (libvirt acquires it before QEMU starts)."""
    return replace(
        _bios_vm(),
        name="ha-1",
        ha=True,
        lease_lockspace="zsd",
        lease_path=f"/shared/cluster/leases/vms/{UID}",
    )


def _hostdev_vm() -> VmSpec:
    """PCI passthrough on q35: an SR-IOV VF (a NIC's) and a whole device (a GPU)."""
    return replace(_bios_vm(), name="gpu-1", machine="q35", hostdevs=("0000:3b:10.2", "0000:af:00.0"))


CASES = {
    "bios_virtio": (_bios_vm, "kvm", True),
    "hostdev_vf_gpu": (_hostdev_vm, "kvm", True),
    "q35_uefi_mixed": (_q35_vm, "qemu", False),
    "ha_lease": (_ha_vm, "kvm", True),
}


def _render(case: str) -> str:
    make, domain_type, odirect = CASES[case]
    traits = designer.HostTraits(
        domain_type=domain_type, console_dir=TRAITS.console_dir, nvram_dir=TRAITS.nvram_dir
    )
    return designer.design(validate(make()), traits, direct_io=lambda _p: odirect).to_xml() + "\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_domain_xml(case: str) -> None:
    xml = _render(case)
    path = GOLDEN / f"{case}.xml"
    if os.environ.get("ZSD_UPDATE_GOLDEN") == "1":
        path.write_text(xml)
    assert xml == path.read_text(), f"{case}: domain XML changed (ZSD_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_files_pass_libvirts_schema(case: str, tmp_path: Path) -> None:
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    path = tmp_path / f"{case}.xml"
    path.write_text(_render(case))
    result = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_schema_check_rejects_a_broken_domain(tmp_path: Path) -> None:
    """The validation above can fail: a domain without <name> is refused."""
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    root = ET.fromstring(_render("bios_virtio"))
    root.remove(root.find("name"))  # type: ignore[arg-type]
    path = tmp_path / "broken.xml"
    path.write_text(ET.tostring(root, encoding="unicode"))
    result = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_names_and_descriptions_cannot_inject_markup() -> None:
    spec = VmSpec(name="x", uid=UID, description='a</title><on_crash>restart</on_crash><title>"&')
    xml = designer.design(validate(spec), TRAITS, direct_io=lambda _p: True).to_xml()
    root = ET.fromstring(xml)
    assert root.findtext("title") == spec.description[:80]
    assert [e.text for e in root.iter("on_crash")] == ["destroy"]


def test_metadata_round_trips_the_whole_spec() -> None:
    spec = validate(_q35_vm())
    xml = designer.design(spec, TRAITS, direct_io=lambda _p: True, generation=7).to_xml()
    facts = metadata.read(xml)
    assert facts is not None
    assert facts.generation == 7
    # The stored spec is the one with targets given (what the domain really has).
    assert facts.spec == spec.with_disks(designer.assign_targets(spec.disks))


def test_metadata_of_foreign_or_damaged_domains_is_none() -> None:
    assert metadata.read("<domain type='kvm'><name>other</name></domain>") is None
    assert metadata.read("not xml") is None
    damaged = (
        f"<domain><metadata><zsd:vm xmlns:zsd='{metadata.NAMESPACE}' uid='u' name='n' generation='1'>"
        "<zsd:spec>{broken</zsd:spec></zsd:vm></metadata></domain>"
    )
    assert metadata.read(damaged) is None


def test_set_metadata_form_is_unqualified_and_readable_back() -> None:
    facts = metadata.VmFacts(spec=validate(_bios_vm()), generation=3)
    text = metadata.metadata_xml(facts)
    assert text.startswith("<vm ") and "xmlns" not in text
    # What libvirt stores: the same element inside the namespace.
    stored = (
        f"<domain><metadata>{ET.tostring(metadata.element(facts), encoding='unicode')}</metadata></domain>"
    )
    assert metadata.read(stored) == facts


def test_targets_are_stable_when_disks_come_and_go() -> None:
    disks = designer.assign_targets(
        (
            DiskSpec(path="/a"),
            DiskSpec(path="/b"),
            DiskSpec(path="/c", bus="sata"),
            DiskSpec(path="/d", bus="scsi"),
        )
    )
    assert [d.target for d in disks] == ["vda", "vdb", "sda", "sdb"]
    without_a = designer.assign_targets((*disks[1:], DiskSpec(path="/e")))
    assert [d.target for d in without_a] == ["vdb", "sda", "sdb", "vda"]


def test_target_letters_go_past_z() -> None:
    disks = designer.assign_targets(tuple(DiskSpec(path=f"/d{i}") for i in range(28)))
    assert [d.target for d in disks][-3:] == ["vdz", "vdaa", "vdab"]


def test_cache_mode_follows_o_direct() -> None:
    spec = validate(VmSpec(name="x", uid=UID, disks=(DiskSpec(path="/tmpfs/x"),)))
    with_direct = designer.design(spec, TRAITS, direct_io=lambda _p: True).element()
    without = designer.design(spec, TRAITS, direct_io=lambda _p: False).element()
    assert with_direct.find("devices/disk/driver").attrib["cache"] == "none"  # type: ignore[union-attr]
    assert with_direct.find("devices/disk/driver").attrib["io"] == "native"  # type: ignore[union-attr]
    assert without.find("devices/disk/driver").attrib["cache"] == "writeback"  # type: ignore[union-attr]
    assert "io" not in without.find("devices/disk/driver").attrib  # type: ignore[union-attr]


def test_tcg_hosts_get_no_host_cpu_model() -> None:
    spec = validate(VmSpec(name="x", uid=UID))
    kvm = designer.design(spec, TRAITS, direct_io=lambda _p: True).element()
    tcg_traits = designer.HostTraits(domain_type="qemu", console_dir=Path("/c"), nvram_dir=Path("/n"))
    tcg = designer.design(spec, tcg_traits, direct_io=lambda _p: True).element()
    assert kvm.attrib["type"] == "kvm" and kvm.find("cpu").attrib["mode"] == "host-model"  # type: ignore[union-attr]
    assert tcg.attrib["type"] == "qemu" and tcg.find("cpu") is None
