"""A host's VMs with their storage: what the API's VM calls do on the host that
runs the VM. It joins the two halves: volumes (pools, attach records, QoS) and
domains (``LocalVms``).

Disks are volumes; a volume is attached to one VM at a time (its record says
which, as ``vms/{name}``), so two VMs never write one qcow2 chain. Every step that
can fail is undone in reverse on failure: a root volume this call cloned is
deleted again (it holds nothing yet), attach records are removed, the domain is
undefined. Volumes the caller brought are never deleted on an error path.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from zsd.compute import pciassign
from zsd.compute.intents import CreateIntent, IntentLog
from zsd.compute.runtime import LocalVms, VmStatus
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec, validate
from zsd.compute.vmlease import VmLeases
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.host import pci
from zsd.storage import validate as storage_validate
from zsd.storage.host import StorageHost
from zsd.storage.images import ImageSource
from zsd.storage.model import ImageRecord, Qos
from zsd.storage.qemuimg import QemuImg

log = logging.getLogger(__name__)

Progress = Callable[[int, str | None], None]


def _no_progress(_percent: int, _message: str | None) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class DiskRequest:
    pool: str
    volume: str
    bus: str = "virtio"
    readonly: bool = False
    boot_order: int = 0
    serial: str = ""

    @property
    def ref(self) -> str:
        return f"{self.pool}/{self.volume}"


@dataclass(frozen=True, kw_only=True)
class RootDisk:
    """A new root volume: a linked clone of an image, made for this VM."""

    image_pool: str
    image: str
    pool: str
    size: int = 0
    """0 = the image's virtual size."""


@dataclass(frozen=True, kw_only=True)
class CreateRequest:
    spec: VmSpec
    """Everything but the disks (which come from ``disks`` and ``root``)."""
    disks: tuple[DiskRequest, ...] = ()
    root: RootDisk | None = None
    start: bool = True
    flatten_root: bool = False
    """Instant full clone: once the VM runs from its linked root, copy the image's
    data into the root until it no longer depends on the image."""


def consumer(vm: str) -> str:
    """How a VM appears in a volume's ``attached_to``."""
    return f"vms/{vm}"


def root_description(vm: str, uid: str) -> str:
    return f"root of VM {vm} ({uid})"


def random_mac() -> str:
    """A MAC in QEMU's locally administered 52:54:00 range."""
    tail = secrets.token_bytes(3)
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


class HostVms:
    def __init__(
        self,
        *,
        vms: LocalVms,
        storage: StorageHost,
        intents: IntentLog,
        leases: VmLeases | None = None,
        sysfs: Path = pci.SYS,
    ) -> None:
        """``leases``: when this host's libvirt holds VM leases (HA VMs get one);
        ``sysfs``: where the host's PCI devices are read (passthrough)."""
        self.vms = vms
        self._storage = storage
        self._intents = intents
        self._leases = leases
        self._sysfs = sysfs
        self._busy: set[str] = set()

    @property
    def creating(self) -> frozenset[str]:
        """VMs whose create is under way here (reported, so the leader waits for them)."""
        return frozenset(self._busy)

    # -- volumes -----------------------------------------------------------------

    def _disk(self, request: DiskRequest, *, index: int, vm: str, qos: Qos | None = None) -> DiskSpec:
        field = f"vm.disks[{index}].volume"
        try:
            pool = self._storage.pool(request.pool)
            record = pool.volumes.get(request.volume)
        except NotFound as e:
            raise NotFound(e.message, field=field, reason="VOLUME_NOT_FOUND") from None
        others = [c for c in record.attached_to if c != consumer(vm)]
        if others:
            raise FailedPrecondition(
                f"volume {request.ref} is attached to {', '.join(others)}; a volume serves one VM at a time",
                field=field,
                reason="VOLUME_IN_USE",
            )
        return DiskSpec(
            path=str(pool.volumes.active_path(record)),
            volume=request.ref,
            format="qcow2",
            bus=request.bus,
            readonly=request.readonly,
            boot_order=request.boot_order,
            qos=qos if qos is not None else record.qos,
            serial=request.serial,
        )

    async def _attach_records(self, vm: str, disks: tuple[DiskSpec, ...]) -> None:
        done: list[DiskSpec] = []
        try:
            for disk in disks:
                pool, volume = disk.volume.split("/", 1)
                await self._storage.pool(pool).volumes.attach(volume, consumer(vm))
                done.append(disk)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._detach_records(vm, tuple(done))
            raise

    async def _detach_records(self, vm: str, disks: tuple[DiskSpec, ...]) -> None:
        for disk in disks:
            pool, volume = disk.volume.split("/", 1)
            try:
                await self._storage.pool(pool).volumes.detach(volume, consumer(vm))
            except NotFound:
                log.warning("volume %s of VM %s is gone; nothing to detach", disk.volume, vm)

    # -- create and delete -------------------------------------------------------

    async def create(self, request: CreateRequest, *, progress: Progress = _no_progress) -> VmStatus:
        spec = request.spec
        async with self._creating(spec.name):
            # Everything that can be checked without touching anything, first.
            validate(replace(spec, disks=()))
            seen: set[str] = set()
            for i, disk in enumerate(request.disks):
                if disk.ref in seen:
                    raise InvalidArgument(
                        f"volume {disk.ref} is listed twice",
                        field=f"vm.disks[{i}].volume",
                        reason="BAD_VM_SPEC",
                    )
                seen.add(disk.ref)
            if await self._exists(spec.name):
                raise FailedPrecondition(
                    f"VM {spec.name!r} already exists on this host", field="vm_id", reason="VM_EXISTS"
                )
            if spec.hostdevs:
                await self._check_hostdevs(spec)
            disks = [self._disk(d, index=i, vm=spec.name) for i, d in enumerate(request.disks)]
            root_ref = self._check_root(spec, request.root) if request.root is not None else ""
            intent = CreateIntent(
                name=spec.name,
                uid=spec.uid,
                volumes=(*((root_ref,) if root_ref else ()), *(d.volume for d in disks)),
                root=root_ref,
            )
            self._intents.begin(intent)
            try:
                status = await self._create(spec, request, disks, progress)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._undo(intent)
                raise
            self._intents.end(spec.name)
        if request.flatten_root and request.root is not None:
            # After the create: the VM exists and runs whatever happens to the copy.
            progress(85, "flattening the root volume")
            await self.flatten_root(spec.name, progress=lambda pct: progress(85 + int(pct * 0.14), None))
            status = await self.vms.status(spec.name)
        return status

    async def _check_hostdevs(self, spec: VmSpec) -> None:
        """Each PCI device is one VM's (the VMs defined here say which), with its whole
        IOMMU group free for it."""
        held = {address: s.spec.name for s in self.vms.summary for address in s.spec.hostdevs}
        inventory = await trio.to_thread.run_sync(lambda: pci.inventory(sysfs=self._sysfs))
        pciassign.check(spec.name, spec.hostdevs, inventory, held)

    @contextlib.asynccontextmanager
    async def _creating(self, name: str) -> AsyncIterator[None]:
        # One create per name at a time: the intent file and the undo are per name.
        if name in self._busy:
            raise FailedPrecondition(
                f"VM {name!r} is being created right now", field="vm_id", reason="VM_EXISTS"
            )
        self._busy.add(name)
        try:
            yield
        finally:
            self._busy.discard(name)

    async def _create(
        self, spec: VmSpec, request: CreateRequest, disks: list[DiskSpec], progress: Progress
    ) -> VmStatus:
        if request.root is not None:
            root = await self._make_root(
                spec, request.root, progress, first_boot=not any(d.boot_order == 1 for d in disks)
            )
            disks.insert(0, root)
        if spec.ha and self._leases is not None:
            lease = await self._leases.ensure(spec.uid)
            spec = replace(spec, lease_lockspace=self._leases.lockspace, lease_path=str(lease))
        full = validate(spec.with_disks(tuple(disks)))
        progress(70, "attaching volumes")
        await self._attach_records(spec.name, full.disks)
        progress(80, "starting" if request.start else "defining")
        return await self.vms.create(full, start=request.start)

    async def _undo(self, intent: CreateIntent) -> None:
        """Takes back every step of a create that did not finish (in this process or
        in one that was killed). Only what the create itself made is removed: its
        domain (matched by uid), its attach records, the root volume it cloned."""
        try:
            await self.vms.remove_if(intent.name, uid=intent.uid)
            for ref in intent.volumes:
                pool, volume = ref.split("/", 1)
                with contextlib.suppress(NotFound):
                    await self._storage.pool(pool).volumes.detach(volume, consumer(intent.name))
            if intent.root:
                await self._drop_new_root(intent)
            if self._leases is not None:
                await self._leases.remove(intent.uid)  # none unless the create wrote it
        except Exception:
            # The create's own error is what the caller must see; the intent stays
            # and the next start tries again.
            log.exception("could not undo the create of VM %s (kept for the next start)", intent.name)
            return
        self._intents.end(intent.name)

    async def recover(self) -> list[str]:
        """At start: finishes the bookkeeping of creates a killed zsd left behind. A
        VM that is running was created (only the intent was left); anything else is
        undone. Returns the VMs undone."""
        undone = []
        for intent in self._intents.pending():
            try:
                status = await self.vms.status(intent.name)
            except NotFound:
                status = None
            if status is not None and status.spec.uid == intent.uid and status.state in ("running", "paused"):
                self._intents.end(intent.name)
                continue
            log.warning("undoing the unfinished create of VM %s", intent.name)
            await self._undo(intent)
            undone.append(intent.name)
        return undone

    def _check_root(self, spec: VmSpec, root: RootDisk) -> str:
        name = f"{spec.name}-root"
        storage_validate.name(name, field="vm_id")
        try:
            pool = self._storage.pool(root.pool)
        except NotFound as e:
            raise NotFound(e.message, field="root_pool", reason="POOL_NOT_FOUND") from None
        if pool.volumes.exists(name):
            raise FailedPrecondition(
                f"pools/{root.pool}/volumes/{name} already exists (a VM's root volume is named "
                f"{{vm_id}}-root); attach it as a disk or delete it",
                field="vm_id",
                reason="ROOT_VOLUME_EXISTS",
            )
        try:
            self._storage.pool(root.image_pool).images.get(root.image)
        except NotFound as e:
            raise NotFound(e.message, field="image", reason="IMAGE_NOT_FOUND") from None
        if root.size:
            storage_validate.size(root.size, field="root_size_bytes")
        return f"{root.pool}/{name}"

    async def _make_root(
        self, spec: VmSpec, root: RootDisk, progress: Progress, *, first_boot: bool
    ) -> DiskSpec:
        name = f"{spec.name}-root"
        image_pool = self._storage.pool(root.image_pool)
        image = image_pool.images.get(root.image)
        pool = self._storage.pool(root.pool)
        if root.size and root.size < image.virtual_size:
            raise InvalidArgument(
                f"the root volume cannot be smaller than the image ({image.virtual_size} bytes)",
                field="root_size_bytes",
            )
        progress(10, f"cloning image {root.image_pool}/{root.image} into pools/{root.pool}/volumes/{name}")
        await pool.create_volume(
            name=name,
            size=root.size or None,
            image=image,
            image_pool=image_pool,
            description=root_description(spec.name, spec.uid),
        )
        request = DiskRequest(pool=root.pool, volume=name, boot_order=1 if first_boot else 0)
        return self._disk(request, index=0, vm=spec.name)

    async def _drop_new_root(self, intent: CreateIntent) -> None:
        """Deletes the root volume an unfinished create made: it holds no guest data
        yet. Recognised by its description (which names the VM's uid), so a volume
        of that name made by anyone else is never touched."""
        pool, volume = intent.root.split("/", 1)
        try:
            record = self._storage.pool(pool).volumes.get(volume)
        except NotFound:
            return
        if record.description != root_description(intent.name, intent.uid) or record.attached_to:
            log.warning("volume %s is not the one VM %s's create made; kept", intent.root, intent.name)
            return
        await self._storage.pool(pool).delete_volume(volume, force=False)

    async def _exists(self, name: str) -> bool:
        try:
            await self.vms.status(name)
        except NotFound:
            return False
        return True

    async def delete(self, name: str, *, delete_volumes: bool) -> VmStatus:
        status = await self.vms.status(name)
        if delete_volumes:
            # Refuse before anything changes: a volume another VM also uses stays.
            for disk in status.spec.disks:
                pool, volume = disk.volume.split("/", 1)
                try:
                    record = self._storage.pool(pool).volumes.get(volume)
                except NotFound:
                    continue
                others = [c for c in record.attached_to if c != consumer(name)]
                if others:
                    raise FailedPrecondition(
                        f"volume {disk.volume} is also attached to {', '.join(others)}; "
                        "detach it there or delete the VM without its volumes",
                        field="delete_volumes",
                        reason="VOLUME_IN_USE",
                    )
        spec = await self.vms.delete(name)
        await self._detach_records(name, spec.disks)
        if spec.lease_path and self._leases is not None:
            await self._leases.remove(spec.uid)
        if delete_volumes:
            for disk in spec.disks:
                pool, volume = disk.volume.split("/", 1)
                with contextlib.suppress(NotFound):
                    await self._storage.pool(pool).delete_volume(volume, force=False)
        return status

    # -- clones ------------------------------------------------------------------

    def _boot_disk(self, status: VmStatus) -> DiskSpec:
        disks = sorted(status.spec.disks, key=lambda d: (d.boot_order == 0, d.boot_order))
        if not disks:
            raise FailedPrecondition(f"VM {status.spec.name} has no disk", reason="NO_DISK")
        return disks[0]

    async def flatten_root(self, name: str, *, progress: Callable[[float], None]) -> None:
        """Copies the image's data into the VM's boot volume, live (QEMU's block pull)
        while it runs, with qemu-img while it is stopped; a VM stopped or started
        half-way keeps a linked, consistent disk. ``progress`` gets percents."""
        status = await self.vms.status(name)
        disk = self._boot_disk(status)
        pool, volume = disk.volume.split("/", 1)

        async def copy(path: Path, report: Callable[[float], None]) -> None:
            if (await self.vms.state(name)) in ("running", "paused"):
                await self.vms.block_pull(name, path, report)
            else:
                await QemuImg().rebase(path, None, progress=report)

        await self._storage.pool(pool).flatten_attached(volume, copy, progress=progress)

    async def capture(
        self, name: str, *, pool: str, image: str, description: str, progress: Callable[[float], None]
    ) -> ImageRecord:
        """Full clone: the stopped VM's boot disk (its whole chain) copied into a new
        image of ``pool``. The copy is made in the pool's own directory, then imported
        (checked, hashed, recorded) like any image; the VM is not changed. ``progress``
        gets percents."""
        status = await self.vms.status(name)
        if status.state not in ("stopped", "crashed"):
            raise FailedPrecondition(
                f"VM {name} is {status.state}: stop it first (its disk must not change during the copy)",
                field="name",
                reason=f"VM_{status.state.upper()}",
            )
        storage_validate.name(image, field="image")
        disk = self._boot_disk(status)
        try:
            target = self._storage.pool(pool)
        except NotFound as e:
            raise NotFound(e.message, field="image", reason="POOL_NOT_FOUND") from None
        with contextlib.suppress(NotFound):
            target.images.get(image)
            raise AlreadyExists(f"image pools/{pool}/images/{image} already exists", field="image")
        tmp = target.files.tmp / f"capture-{status.spec.uid}.qcow2"
        try:
            await QemuImg().convert(
                Path(disk.path), tmp, source_format=disk.format, progress=lambda pct: progress(0.8 * pct)
            )
            return await target.images.import_image(
                name=image,
                source=ImageSource(path=str(tmp)),
                format="qcow2",
                description=description or f"captured from VM {name} ({status.spec.uid})",
                progress=lambda pct, _m: progress(80 + pct / 5),
            )
        finally:
            tmp.unlink(missing_ok=True)

    # -- devices -----------------------------------------------------------------

    async def attach_disk(self, name: str, request: DiskRequest) -> VmStatus:
        status = await self.vms.status(name)
        if any(d.volume == request.ref for d in status.spec.disks):
            raise FailedPrecondition(
                f"volume {request.ref} is already attached to VM {name}",
                field="disk.volume",
                reason="DISK_ATTACHED",
            )
        disk = self._disk(request, index=0, vm=name)
        await self._attach_records(name, (disk,))
        try:
            return await self.vms.attach_disk(name, disk)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._detach_records(name, (disk,))
            raise

    async def detach_disk(self, name: str, volume: str) -> VmStatus:
        status = await self.vms.status(name)
        disk = next((d for d in status.spec.disks if d.volume == volume), None)
        if disk is None:
            raise NotFound(
                f"volume {volume} is not attached to VM {name}", field="volume", reason="DISK_NOT_ATTACHED"
            )
        out = await self.vms.detach_disk(name, disk.path)
        await self._detach_records(name, (disk,))
        return out

    async def attach_nic(self, name: str, nic: NicSpec) -> VmStatus:
        if not nic.mac:
            nic = replace(nic, mac=random_mac())
        return await self.vms.attach_nic(name, nic)

    async def snapshot_volume(self, pool: str, volume: str, snapshot: str, *, description: str) -> None:
        """A snapshot of a volume a VM here holds, taken under it: live (QEMU moves
        onto the new layer while the guest runs) or, while the VM is stopped, through a
        new definition. A VM on another host is refused with its name."""
        ref = f"{pool}/{volume}"
        store = self._storage.pool(pool).volumes
        holders = [h.removeprefix("vms/") for h in store.get(volume).attached_to]
        for name in holders:
            try:
                status = await self.vms.status(name)
            except NotFound:
                continue
            if not any(d.volume == ref for d in status.spec.disks):
                continue

            async def switch(old: Path, new: Path, vm: str = name) -> None:
                await self.vms.switch_disk(vm, old, new)

            await store.snapshot(volume, snapshot, description=description, switch=switch)
            return
        raise FailedPrecondition(
            f"volume {ref} is attached to {', '.join(holders)}, which is not on this host: "
            "take the snapshot through the VM's host",
            field="parent",
            reason="VM_ON_OTHER_HOST",
        )

    async def apply_volume_qos(self, pool: str, volume: str, qos: Qos) -> list[str]:
        """Makes a volume's new QoS the disk's on the VM here that has it (live when it
        runs); returns that VM. A volume no VM uses needs no hypervisor at all."""
        ref = f"{pool}/{volume}"
        record = self._storage.pool(pool).volumes.get(volume)
        changed = []
        for holder in record.attached_to:
            name = holder.removeprefix("vms/")
            try:
                status = await self.vms.status(name)
            except NotFound:
                log.warning("volume %s names VM %s, which is not on this host", ref, name)
                continue
            for disk in status.spec.disks:
                if disk.volume == ref:
                    await self.vms.set_qos(name, disk.path, qos)
                    changed.append(name)
        return changed
