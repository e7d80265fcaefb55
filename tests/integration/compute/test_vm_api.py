"""VMs through the real daemon and zsctl: a real zsd (cluster of one) on a private
libvirtd, booting the contrib guest from an imported image. What an operator
types, checked against what the guest itself prints on its console."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.integration.zsdproc import ZsdProcess, start_zsd, zsctl
from zsd.testing.libvirtd import Libvirtd

pytestmark = pytest.mark.integration

MARK = "ZSD-GUEST: "


def _start(root: Path, lv: Libvirtd) -> ZsdProcess:
    proc = start_zsd(
        root,
        "--set",
        "hypervisor.kind=qemu",
        "--set",
        f"hypervisor.libvirt_uri={lv.uri}",
        "--set",
        "host.name=vm-host",
    )
    proc.wait_for("READY=1")
    return proc


@pytest.fixture
def zsd(tmp_path: Path, private_libvirtd: Libvirtd) -> Iterator[ZsdProcess]:
    proc = _start(tmp_path / "root", private_libvirtd)
    try:
        yield proc
    finally:
        proc.stop()
        _remove_domains(private_libvirtd)


def _remove_domains(lv: Libvirtd) -> None:
    conn = libvirt.open(lv.uri)
    try:
        for dom in conn.listAllDomains(0):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


def ok(zsd: ZsdProcess, *args: str) -> str:
    done = zsctl(zsd.endpoint, *args, timeout=120)
    assert done.returncode == 0, f"zsctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def data(zsd: ZsdProcess, *args: str) -> Any:
    return json.loads(ok(zsd, "-o", "json", *args))


def refused(zsd: ZsdProcess, *args: str) -> str:
    done = zsctl(zsd.endpoint, *args, timeout=120)
    assert done.returncode != 0, f"zsctl {' '.join(args)} should have failed: {done.stdout}"
    return done.stderr


class Console:
    """The guest's console through `zsctl vm console`, markers found in order."""

    def __init__(self, zsd: ZsdProcess, vm: str) -> None:
        self._zsd = zsd
        self._vm = vm
        self._pos = 0

    def expect(self, marker: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        needle = MARK + marker
        while True:
            text = ok(self._zsd, "vm", "console", self._vm)
            index = text.find(needle, self._pos)
            if index >= 0 and "\n" in text[index:]:
                end = text.index("\n", index)
                self._pos = end
                return text[index:end].strip()
            assert time.monotonic() < deadline, f"no {needle!r} on {self._vm}'s console:\n{text[-2000:]}"
            time.sleep(0.3)


def _live_iotune(lv: Libvirtd, vm: str, target: str) -> dict[str, int]:
    conn = libvirt.open(lv.uri)
    try:
        raw = conn.lookupByName(vm).blockIoTune(target, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return {k: int(v) for k, v in raw.items() if isinstance(v, int)}
    finally:
        conn.close()


def _qemu_pid(lv: Libvirtd, vm: str) -> int:
    return int((lv.root / "run" / "qemu" / f"{vm}.pid").read_text())


def test_vm_flow_from_image_to_delete(
    zsd: ZsdProcess, guest_image: Path, private_libvirtd: Libvirtd, tmp_path: Path
) -> None:
    ok(zsd, "image", "import", "default/guest", "--path", str(guest_image), "--format", "qcow2")

    vm = data(zsd, "vm", "create", "web", "--image", "default/guest", "--memory", "128M", "--nic", "-")
    assert (vm["name"], vm["state"], vm["host"]) == ("vms/web", "RUNNING", "hosts/vm-host")
    assert [(d["volume"], d["target"], d["boot_order"]) for d in vm["disks"]] == [
        ("pools/default/volumes/web-root", "vda", 1)
    ]
    assert vm["nics"][0]["mac"].startswith("52:54:00:")
    root = data(zsd, "volume", "show", "default/web-root")
    assert (root["linked"], root["attached_to"]) == (True, ["vms/web"])
    console = Console(zsd, "web")
    assert "booted" in console.expect("booted")
    console.expect("ready")
    assert ok(zsd, "vm", "display", "web").startswith("vnc://127.0.0.1:59")
    assert "VM_RUNNING" in refused(zsd, "vm", "start", "web")

    # A data volume: hot-plugged, its QoS applied live, refused deletion while attached.
    ok(zsd, "volume", "create", "default/data", "--size", "16M")
    vm = data(zsd, "vm", "attach-disk", "web", "default/data")
    assert [d["target"] for d in vm["disks"]] == ["vda", "vdb"]
    console.expect("disk+ vdb")
    ok(
        zsd,
        "volume",
        "update",
        "default/data",
        "--qos",
        "total_iops=300",
        "total_iops_max=900",
        "burst_seconds=20",
    )
    live = _live_iotune(private_libvirtd, "web", "vdb")
    assert (live["total_iops_sec"], live["total_iops_sec_max"], live["total_iops_sec_max_length"]) == (
        300,
        900,
        20,
    )
    assert data(zsd, "vm", "show", "web")["disks"][1]["qos"]["total_iops"] == "300"
    assert "VOLUME_ATTACHED" in refused(zsd, "volume", "delete", "default/data")
    # One volume serves one VM: another VM cannot take it.
    stderr = refused(zsd, "vm", "create", "thief", "--disk", "default/data", "--no-start")
    assert "VOLUME_IN_USE" in stderr and "vm.disks[0].volume" in stderr
    ok(zsd, "vm", "detach-disk", "web", "default/data")
    console.expect("disk- vdb")
    assert data(zsd, "volume", "show", "default/data")["attached_to"] == []

    # A restarted zsd adopts the running guest without touching it.
    pid = _qemu_pid(private_libvirtd, "web")
    zsd.stop()
    again = _start(zsd.root, private_libvirtd)
    try:
        assert [(v["name"], v["state"]) for v in data(again, "vm", "list")] == [("vms/web", "RUNNING")]
        assert _qemu_pid(private_libvirtd, "web") == pid

        stopped = data(again, "vm", "stop", "web", "--guest-timeout", "60")
        assert stopped["state"] == "STOPPED"
        Console(again, "web").expect("power-button")
        updated = data(again, "vm", "update", "web", "--vcpus", "2", "--memory", "192M")
        assert (updated["vcpus"], updated["memory_mib"]) == (2, "192")

        gone = data(again, "vm", "delete", "web")
        assert gone["name"] == "vms/web"
        assert data(again, "vm", "list") == []
        # Deleting a VM keeps its volumes (unless asked), detached.
        assert data(again, "volume", "show", "default/web-root")["attached_to"] == []
    finally:
        again.stop()


def test_instant_clone_and_full_clone(zsd: ZsdProcess, guest_image: Path) -> None:
    ok(zsd, "image", "import", "default/guest", "--path", str(guest_image), "--format", "qcow2")

    # Instant full clone: the operation ends only once the root no longer depends on
    # the image, and the guest booted from it meanwhile keeps running.
    vm = data(zsd, "vm", "create", "c1", "--image", "default/guest", "--memory", "96M", "--flatten")
    assert vm["state"] == "RUNNING"
    root = data(zsd, "volume", "show", "default/c1-root")
    assert (root["linked"], root["attached_to"]) == (False, ["vms/c1"])
    console = Console(zsd, "c1")
    console.expect("booted")
    console.expect("ready")
    assert data(zsd, "vm", "show", "c1")["state"] == "RUNNING"
    assert data(zsd, "volume", "show", "default/c1-root")["image"] == ""

    # Full clone: only a stopped VM; the image is self-contained, and a VM made from it
    # boots the same guest.
    assert "VM_RUNNING" in refused(zsd, "vm", "capture", "c1", "default/golden")
    ok(zsd, "vm", "stop", "c1", "--force")
    image = data(zsd, "vm", "capture", "c1", "default/golden")
    assert image["name"] == "pools/default/images/golden" and image["format"] == "QCOW2"
    assert "ALREADY_EXISTS" in refused(zsd, "vm", "capture", "c1", "default/golden")
    ok(zsd, "image", "delete", "default/guest")  # the clone depends on neither the image nor c1
    ok(zsd, "vm", "delete", "c1", "--volumes")
    data(zsd, "vm", "create", "c2", "--image", "default/golden", "--memory", "96M")
    Console(zsd, "c2").expect("booted")


def _disk_sources(lv: Libvirtd, vm: str, *, inactive: bool = False) -> list[str]:
    """The files of the VM's first disk as libvirt sees it: the top, then its backing chain."""
    conn = libvirt.open(lv.uri)
    try:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        disk = ET.fromstring(conn.lookupByName(vm).XMLDesc(flags)).find("./devices/disk")
        assert disk is not None
        files = []
        node: ET.Element | None = disk
        while node is not None and node.find("source") is not None:
            files.append(node.find("source").get("file", ""))  # type: ignore[union-attr]
            node = node.find("backingStore")
        return files
    finally:
        conn.close()


def test_live_disk_snapshots(zsd: ZsdProcess, guest_image: Path, private_libvirtd: Libvirtd) -> None:
    ok(zsd, "image", "import", "default/guest", "--path", str(guest_image), "--format", "qcow2")
    data(zsd, "vm", "create", "snap", "--image", "default/guest", "--memory", "96M")
    console = Console(zsd, "snap")
    console.expect("ready")
    pid = _qemu_pid(private_libvirtd, "snap")
    before = _disk_sources(private_libvirtd, "snap")

    # Live: the guest keeps running in the same QEMU, which now writes a new top layer
    # on the frozen one; the definition and zsd's spec follow.
    snap = data(zsd, "snapshot", "create", "default/snap-root@s1", "--description", "live")
    assert snap["name"] == "pools/default/volumes/snap-root/snapshots/s1"
    assert data(zsd, "vm", "show", "snap")["state"] == "RUNNING"
    assert _qemu_pid(private_libvirtd, "snap") == pid
    live = _disk_sources(private_libvirtd, "snap")
    assert live[0] != before[0] and live[1] == before[0], (before, live)
    assert _disk_sources(private_libvirtd, "snap", inactive=True)[0] == live[0]
    assert "ALREADY_EXISTS" in refused(zsd, "snapshot", "create", "default/snap-root@s1")
    # Merging a snapshot away under a running guest is not offered: a clear refusal.
    assert "VOLUME_ATTACHED" in refused(zsd, "snapshot", "delete", "default/snap-root@s1")

    # Stopped: a new definition on the next layer; the guest boots from the chain.
    ok(zsd, "vm", "stop", "snap", "--force")
    data(zsd, "snapshot", "create", "default/snap-root@s2")
    stopped = _disk_sources(private_libvirtd, "snap", inactive=True)
    assert stopped[0] not in (before[0], live[0])
    assert [s["name"].rsplit("/", 1)[1] for s in data(zsd, "snapshot", "list", "default/snap-root")] == [
        "s1",
        "s2",
    ]
    ok(zsd, "vm", "start", "snap")
    console.expect("booted")
    assert _disk_sources(private_libvirtd, "snap")[:3] == [stopped[0], live[0], before[0]]

    # Detached (the VM deleted, its volume kept), the snapshots merge away as usual.
    ok(zsd, "vm", "stop", "snap", "--force")
    ok(zsd, "vm", "delete", "snap")
    ok(zsd, "snapshot", "delete", "default/snap-root@s1")
    assert [s["name"].rsplit("/", 1)[1] for s in data(zsd, "snapshot", "list", "default/snap-root")] == ["s2"]


def test_bad_input_and_failures_leave_nothing_behind(zsd: ZsdProcess, private_libvirtd: Libvirtd) -> None:
    def volumes() -> list[str]:
        return [v["name"] for v in data(zsd, "volume", "list", "--pool", "default")]

    before = volumes()
    assert "field: vm_id" in refused(zsd, "vm", "create", "a..b", "--no-start")
    assert "field: vm.memory_mib" in refused(zsd, "vm", "create", "tiny", "--memory", "8M", "--no-start")
    stderr = refused(zsd, "vm", "create", "ghost", "--image", "default/nope")
    assert "IMAGE_NOT_FOUND" in stderr and "field: image" in stderr
    stderr = refused(zsd, "vm", "create", "ghost", "--disk", "default/nope", "--no-start")
    assert "VOLUME_NOT_FOUND" in stderr and "vm.disks[0].volume" in stderr
    assert "field: vm.nics[0].mac" in refused(zsd, "vm", "create", "nic", "--nic", "mac=01:00:5e:00:00:01")
    assert "field: vm.nics[0].bridge" in refused(
        zsd, "vm", "create", "inj", "--nic", "bridge=br0'/><x", "--no-start"
    )
    assert "NOT_A_MEMBER" in refused(zsd, "vm", "create", "far", "--host", "other", "--no-start")
    # Passthrough of a device this host does not have (this machine has no such hardware).
    stderr = refused(zsd, "vm", "create", "pt", "--hostdev", "0000:99:1f.7", "--no-start")
    assert "PCI_DEVICE_NOT_FOUND" in stderr and "vm.hostdevs[0]" in stderr
    assert "field: vm.hostdevs[0]" in refused(zsd, "vm", "create", "pt", "--hostdev", "99:1f.7", "--no-start")
    assert data(zsd, "vm", "list") == []
    assert volumes() == before

    # None of the refusals above defined a domain.
    ok(zsd, "volume", "create", "default/bad", "--size", "1M")
    vol = data(zsd, "volume", "show", "default/bad")
    assert vol["attached_to"] == []
    conn = libvirt.open(private_libvirtd.uri)
    try:
        assert [d.name() for d in conn.listAllDomains(0)] == []
    finally:
        conn.close()
    made = data(zsd, "vm", "create", "stopped", "--disk", "default/bad", "--no-start")
    assert made["state"] == "STOPPED"
    assert "VM_EXISTS" in refused(zsd, "vm", "create", "stopped", "--no-start")
    assert "VM_STOPPED" in refused(zsd, "vm", "stop", "stopped")
    ok(zsd, "vm", "delete", "stopped", "--volumes")
    assert "pools/default/volumes/bad" not in volumes()
