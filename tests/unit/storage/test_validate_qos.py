"""Input checks for storage names, sizes and QoS, and the QoS -> libvirt iotune mapping."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from zsd.errors import InvalidArgument
from zsd.storage import validate
from zsd.storage.model import Qos
from zsd.storage.qos import iotune_element, iotune_params


@pytest.mark.parametrize("name", ["a", "web-01", "db.data_2", "x" * 63])
def test_good_names(name: str) -> None:
    assert validate.name(name, field="volume_id") == name


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", ".hidden", "-x", "x-", "UPPER", "x" * 64, "a b"])
def test_bad_names_name_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate.name(name, field="volume_id")
    assert (e.value.field, e.value.reason) == ("volume_id", "BAD_NAME")
    assert "no '/'" in e.value.message


@pytest.mark.parametrize(
    ("size", "ok"), [(512, True), (1 << 30, True), (0, False), (-512, False), (513, False)]
)
def test_sizes(size: int, ok: bool) -> None:
    if ok:
        assert validate.size(size, field="size_bytes") == size
    else:
        with pytest.raises(InvalidArgument) as e:
            validate.size(size, field="size_bytes")
        assert e.value.field == "size_bytes"


@pytest.mark.parametrize(
    ("qos", "field"),
    [
        (Qos(total_iops=-1), "qos.total_iops"),
        (Qos(total_iops=10, read_iops=5), "qos.total_iops"),
        (Qos(total_bytes_per_sec_max=10, total_bytes_per_sec=0), "qos.total_bytes_per_sec_max"),
        (Qos(read_iops=100, read_iops_max=50), "qos.read_iops_max"),
        (Qos(read_iops=100, burst_seconds=10), "qos.burst_seconds"),
        (Qos(total_iops_max=20, total_iops=10, read_iops_max=5), "qos.total_iops_max"),
    ],
)
def test_bad_qos(qos: Qos, field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate.qos(qos, field="qos")
    assert e.value.field == field


def test_iotune_maps_limits_and_bursts() -> None:
    qos = Qos(read_iops=500, read_iops_max=2000, write_bytes_per_sec=10 << 20, burst_seconds=30)
    assert validate.qos(qos, field="qos") == qos
    assert iotune_params(qos, group="vm1") == {
        "write_bytes_sec": 10 << 20,
        "read_iops_sec": 500,
        "read_iops_sec_max": 2000,
        "read_iops_sec_max_length": 30,
        "group_name": "vm1",
    }
    assert iotune_element(Qos()) is None and Qos().unlimited


@pytest.mark.skipif(
    shutil.which("virt-xml-validate") is None, reason="virt-xml-validate (libvirt-clients) missing"
)
def test_iotune_is_valid_libvirt_domain_xml(tmp_path: Path) -> None:
    """libvirt's own schema accepts the element inside a disk."""
    qos = Qos(
        total_bytes_per_sec=50 << 20,
        total_bytes_per_sec_max=100 << 20,
        read_iops=300,
        read_iops_max=900,
        write_iops=200,
        burst_seconds=20,
    )
    iotune = iotune_element(qos)
    assert iotune is not None
    domain = ET.fromstring(
        "<domain type='qemu'><name>t</name><memory>65536</memory><os><type>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/x.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    disk = domain.find("devices/disk")
    assert disk is not None
    disk.append(iotune)
    path = tmp_path / "domain.xml"
    path.write_bytes(ET.tostring(domain))
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # And the schema does reject what is not iotune, so the check above can fail.
    ET.SubElement(iotune, "no_such_limit").text = "1"
    path.write_bytes(ET.tostring(domain))
    rejected = subprocess.run(["virt-xml-validate", str(path), "domain"], check=False, capture_output=True)
    assert rejected.returncode != 0
