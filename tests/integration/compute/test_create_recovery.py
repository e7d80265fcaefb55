"""A create interrupted at any step leaves nothing behind once zsd starts again:
the states a killed zsd can leave are built for real (storage, attach records,
libvirt domains) and ``HostVms.recover`` must clear exactly what the create made."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest
import trio

from zsd.compute.designer import HostTraits
from zsd.compute.hostvms import CreateRequest, DiskRequest, HostVms, RootDisk, consumer, root_description
from zsd.compute.hypervisor import Hypervisor
from zsd.compute.intents import CreateIntent, IntentLog
from zsd.compute.runtime import LocalVms
from zsd.compute.spec import VmSpec
from zsd.errors import FailedPrecondition, NotFound
from zsd.paths import Paths
from zsd.storage.host import StorageHost
from zsd.storage.images import ImageSource
from zsd.storage.setup import open_storage
from zsd.testing.libvirtd import Libvirtd

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
async def setup(
    private_libvirtd: Libvirtd, tmp_path: Path, guest_image: Path
) -> AsyncIterator[tuple[HostVms, StorageHost, IntentLog]]:
    paths = Paths(root=tmp_path / "root")
    storage = open_storage(paths=paths, host="h")
    await storage.start(default_dir=paths.default_pool_dir)
    pool = storage.pool("default")
    await pool.images.import_image(name="guest", source=ImageSource(path=str(guest_image)))
    hv = Hypervisor(private_libvirtd.uri)
    await hv.open()
    traits = HostTraits(domain_type="qemu", console_dir=tmp_path / "console", nvram_dir=tmp_path / "nvram")
    vms = LocalVms(hv, traits)
    intents = IntentLog(tmp_path / "intents")
    try:
        yield HostVms(vms=vms, storage=storage, intents=intents), storage, intents
    finally:
        with trio.CancelScope(shield=True):
            for vm in await vms.adopt():
                await vms.remove_if(vm.spec.name, uid=vm.spec.uid)
            await hv.aclose()


def _spec(name: str) -> VmSpec:
    return VmSpec(name=name, uid=str(uuid.uuid4()), memory_mib=128, graphics="none")


def _domains(lv: Libvirtd) -> list[str]:
    conn = libvirt.open(lv.uri)
    try:
        return sorted(d.name() for d in conn.listAllDomains(0))
    finally:
        conn.close()


async def test_unfinished_creates_are_undone_and_finished_ones_kept(
    setup: tuple[HostVms, StorageHost, IntentLog], private_libvirtd: Libvirtd
) -> None:
    vms, storage, intents = setup
    pool = storage.pool("default")
    await pool.create_volume(name="user-data", size=MiB)

    # 1. Killed after the domain was defined but before it started: a stopped domain,
    #    a root clone, attach records on the root and on the user's own volume.
    half = await vms.create(
        CreateRequest(
            spec=_spec("half"),
            disks=(DiskRequest(pool="default", volume="user-data"),),
            root=RootDisk(image_pool="default", image="guest", pool="default"),
            start=False,
        )
    )
    intents.begin(
        CreateIntent(
            name="half",
            uid=half.spec.uid,
            volumes=("default/half-root", "default/user-data"),
            root="default/half-root",
        )
    )
    # 2. Killed after the root clone, before anything else.
    early = _spec("early")
    await pool.create_volume(
        name="early-root",
        size=None,
        image=pool.images.get("guest"),
        image_pool=pool,
        description=root_description("early", early.uid),
    )
    intents.begin(
        CreateIntent(name="early", uid=early.uid, volumes=("default/early-root",), root="default/early-root")
    )
    # 3. Killed after the start, before the intent was removed: a finished create.
    done = await vms.create(
        CreateRequest(spec=_spec("done"), root=RootDisk(image_pool="default", image="guest", pool="default"))
    )
    intents.begin(
        CreateIntent(name="done", uid=done.spec.uid, volumes=("default/done-root",), root="default/done-root")
    )
    # 4. An intent whose root name belongs to someone else's volume: never deleted.
    await pool.create_volume(name="other-root", size=MiB, description="precious")
    intents.begin(CreateIntent(name="other", uid=str(uuid.uuid4()), volumes=(), root="default/other-root"))

    undone = await vms.recover()

    assert sorted(undone) == ["early", "half", "other"]
    assert intents.pending() == []
    assert _domains(private_libvirtd) == ["done"]
    names = sorted(v.name for v in pool.volumes.records())
    assert names == ["done-root", "other-root", "user-data"]
    assert pool.volumes.get("user-data").attached_to == ()
    assert pool.volumes.get("done-root").attached_to == (consumer("done"),)
    assert pool.volumes.get("other-root").description == "precious"


async def test_a_failed_create_undoes_itself(setup: tuple[HostVms, StorageHost, IntentLog]) -> None:
    vms, storage, intents = setup
    pool = storage.pool("default")
    await pool.create_volume(name="disk", size=MiB)
    spec = _spec("dup")
    await vms.create(CreateRequest(spec=spec, start=False))
    # Same VM uid already defined under another name: libvirt refuses the define.
    clash = VmSpec(name="clash", uid=spec.uid, memory_mib=128, graphics="none")
    with pytest.raises(Exception) as failed:
        await vms.create(
            CreateRequest(
                spec=clash,
                disks=(DiskRequest(pool="default", volume="disk"),),
                root=RootDisk(image_pool="default", image="guest", pool="default"),
            )
        )
    assert "uuid" in str(failed.value)
    assert not pool.volumes.exists("clash-root")
    assert pool.volumes.get("disk").attached_to == ()
    assert intents.pending() == []
    assert (await vms.vms.status("dup")).spec.uid == spec.uid, "the other VM is untouched"
    with pytest.raises(NotFound):
        await vms.vms.status("clash")

    # A root volume name that is taken is refused before anything happens.
    await pool.create_volume(name="taken-root", size=MiB)
    with pytest.raises(FailedPrecondition) as taken:
        await vms.create(
            CreateRequest(
                spec=_spec("taken"), root=RootDisk(image_pool="default", image="guest", pool="default")
            )
        )
    assert taken.value.reason == "ROOT_VOLUME_EXISTS"
    assert pool.volumes.get("taken-root").virtual_size == MiB
