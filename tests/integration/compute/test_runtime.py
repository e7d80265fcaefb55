"""VM lifecycle on a real (private) libvirtd with real QEMU guests (TCG here): the
guest's own console markers prove what happened inside it."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest
import trio

from zsd.compute.designer import HostTraits
from zsd.compute.hypervisor import Hypervisor
from zsd.compute.runtime import LocalVms
from zsd.compute.spec import DiskSpec, NicSpec
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.storage.model import Qos
from zsd.testing.libvirtd import Libvirtd

from .kit import Console, blank, overlay, spec

pytestmark = pytest.mark.integration


@pytest.fixture
async def vms(private_libvirtd: Libvirtd, tmp_path: Path) -> AsyncIterator[LocalVms]:
    hv = Hypervisor(private_libvirtd.uri)
    await hv.open()
    traits = HostTraits(domain_type="qemu", console_dir=tmp_path / "console", nvram_dir=tmp_path / "nvram")
    runtime = LocalVms(hv, traits)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.follow_events)
        try:
            yield runtime
        finally:
            with trio.CancelScope(shield=True):
                for vm in await runtime.adopt():
                    if vm.state != "stopped":
                        await runtime.force_off(vm.spec.name)
                    await runtime.delete(vm.spec.name)
                await hv.aclose()
            nursery.cancel_scope.cancel()


def _domain_names(lv: Libvirtd) -> list[str]:
    conn = libvirt.open(lv.uri)
    try:
        return sorted(d.name() for d in conn.listAllDomains(0))
    finally:
        conn.close()


async def test_lifecycle_hotplug_qos_and_acpi_stop(vms: LocalVms, guest_image: Path, tmp_path: Path) -> None:
    disk = overlay(guest_image, tmp_path / "web.qcow2")
    nic = NicSpec(mac="52:54:00:aa:00:01")
    created = await vms.create(spec("web", disk, nics=(nic,)))
    assert created.state == "running"
    console = Console(vms, "web")
    assert "6.1.0" in await console.expect("booted")
    await console.expect_all("disk+ vda", "nic+ eth0", "ready")
    display = await vms.display("web")
    assert (display.kind, display.address) == ("vnc", "127.0.0.1") and display.port >= 5900

    with pytest.raises(FailedPrecondition) as running:
        await vms.start("web")
    assert running.value.reason == "VM_RUNNING"

    await vms.pause("web")
    assert await vms.state("web") == "paused"
    await vms.resume("web")
    assert await vms.state("web") == "running"

    extra = blank(tmp_path / "data.qcow2")
    status = await vms.attach_disk("web", DiskSpec(path=str(extra), volume="test/data"))
    assert [d.path for d in status.spec.disks] == [str(disk), str(extra)]
    await console.expect("disk+ vdb")
    await vms.attach_nic("web", NicSpec(mac="52:54:00:aa:00:02", model="virtio", backend="qemu"))
    await console.expect("nic+ eth1")

    await vms.set_qos("web", str(extra), Qos(total_iops=500, total_iops_max=2000, burst_seconds=30))
    live = await vms.live_iotune("web", str(extra))
    assert (live["total_iops_sec"], live["total_iops_sec_max"], live["total_iops_sec_max_length"]) == (
        500,
        2000,
        30,
    )
    await vms.set_qos("web", str(extra), Qos())
    assert (await vms.live_iotune("web", str(extra)))["total_iops_sec"] == 0

    await vms.detach_disk("web", str(extra))
    await console.expect("disk- vdb")
    status = await vms.detach_nic("web", "52:54:00:aa:00:02")
    await console.expect("nic- eth1")
    assert [n.mac for n in status.spec.nics] == [nic.mac]

    await vms.reboot("web")
    await console.expect("power-button")
    await console.expect("booted")
    assert await vms.wait_state("web", ("running",), timeout=30) == "running"
    await console.expect_all("ready", "disk+ vda")

    forced = await vms.stop("web", timeout=60)
    assert forced is False
    await console.expect("power-button")
    assert await vms.state("web") == "stopped"

    with pytest.raises(FailedPrecondition):
        await vms.stop("web", timeout=1)
    updated = await vms.update_offline("web", vcpus=2, memory_mib=192)
    assert (updated.spec.vcpus, updated.spec.memory_mib, updated.generation) > (1, 128, 1)
    removed = await vms.delete("web")
    assert removed.disks[0].path == str(disk)
    assert disk.exists() and extra.exists(), "volumes are never deleted by the runtime"
    with pytest.raises(NotFound):
        await vms.status("web")


async def test_paused_guest_is_forced_off_and_outside_changes_arrive(
    vms: LocalVms, guest_image: Path, tmp_path: Path, private_libvirtd: Libvirtd
) -> None:
    await vms.create(spec("db", overlay(guest_image, tmp_path / "db.qcow2")))
    console = Console(vms, "db")
    await console.expect("booted")
    await vms.pause("db")
    # A paused guest cannot see the power button: stop falls back to forcing it off.
    assert await vms.stop("db", timeout=2) is True
    assert await vms.state("db") == "stopped"

    await vms.start("db")
    await console.expect("booted")
    # Someone else destroys it (virsh, a crash): the event reaches zsd without polling zsd.
    subprocess.run(["virsh", "-c", private_libvirtd.uri, "destroy", "db"], check=True, capture_output=True)
    assert await vms.wait_state("db", ("stopped",), timeout=10) == "stopped"


async def test_restarted_zsd_adopts_running_vms_untouched(
    vms: LocalVms, guest_image: Path, tmp_path: Path, private_libvirtd: Libvirtd
) -> None:
    made = await vms.create(spec("app", overlay(guest_image, tmp_path / "app.qcow2")))
    await Console(vms, "app").expect("booted")
    conn = libvirt.open(private_libvirtd.uri)
    try:
        domain_id = conn.lookupByName("app").ID()
        # A domain that is not zsd's: listed by libvirt, never adopted.
        conn.defineXML(
            "<domain type='qemu'><name>foreign</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        )
        other = Hypervisor(private_libvirtd.uri)
        await other.open()
        again = LocalVms(
            other, HostTraits(domain_type="qemu", console_dir=tmp_path / "c", nvram_dir=tmp_path / "n")
        )
        adopted = await again.adopt()
        await other.aclose()
        assert [(v.spec, v.state) for v in adopted] == [(made.spec, "running")]
        assert conn.lookupByName("app").ID() == domain_id, "adoption must not restart the guest"
        conn.lookupByName("foreign").undefine()
    finally:
        conn.close()


async def test_failed_start_leaves_nothing_and_bad_input_is_named(
    vms: LocalVms, guest_image: Path, tmp_path: Path, private_libvirtd: Libvirtd
) -> None:
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"this is not a qcow2 image\n" * 100)
    with pytest.raises(Exception) as failed:
        await vms.create(spec("broken", broken))
    assert "broken" in str(failed.value)
    assert "broken" not in _domain_names(private_libvirtd)
    assert broken.read_bytes().startswith(b"this is not"), "the user's file is untouched"

    with pytest.raises(InvalidArgument) as bad_name:
        await vms.create(spec("x<y>", broken))
    assert bad_name.value.field == "vm.name"
    with pytest.raises(NotFound) as missing:
        await vms.create(spec("ghost", tmp_path / "nope.qcow2"))
    assert missing.value.field == "vm.disks[0].path"

    await vms.create(spec("dup", overlay(guest_image, tmp_path / "dup.qcow2")), start=False)
    with pytest.raises(AlreadyExists) as dup:
        await vms.create(spec("dup", overlay(guest_image, tmp_path / "dup2.qcow2")), start=False)
    assert dup.value.field == "vm.name"
