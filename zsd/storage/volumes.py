"""Volumes of a file-based pool: thin qcow2 chains with snapshots, clones and flatten.

A volume is a chain of qcow2 layers, optionally on a read-only base in the
pool's image cache (a linked clone). The guest writes the *active* layer.
Taking a snapshot freezes the active layer and puts a new one on top; reverting
puts a new active layer on the snapshot's; deleting a snapshot merges its
layer away (see ``_delete_plan``). Every operation is journaled (``journal``):
its commit point is an atomic record write or rename, and ``recover`` finishes
or undoes what a crash interrupted.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import trio

from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.storage import validate
from zsd.storage.journal import Entry, Journal
from zsd.storage.locks import FileLocks
from zsd.storage.model import (
    BaseImage,
    Layer,
    Qos,
    SnapshotRecord,
    VolumeRecord,
    decode_volume,
    encode,
)
from zsd.storage.pools.files import PoolFiles
from zsd.storage.qemuimg import ProgressFn, QemuImg
from zsd.util.fsutil import write_atomic

ReserveFn = Callable[[int], None]
"""Raises when ``n`` more provisioned bytes would break the pool's capacity limits."""


CopyFn = Callable[[Path, ProgressFn], Awaitable[None]]
"""Streams a linked layer's base into it (the file, and progress 0..1 to report)."""

SwitchFn = Callable[[Path, Path], Awaitable[None]]
"""Moves the VM holding a volume from its active layer (first path) onto a new layer
on top of it (second path). Raises only when the VM still writes the old layer."""


def _no_progress(_: float) -> None:
    pass


class VolumeStore:
    def __init__(
        self,
        files: PoolFiles,
        *,
        qemu: QemuImg,
        locks: FileLocks,
        journal: Journal,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._files = files
        self._qemu = qemu
        self._locks = locks
        self._journal = journal
        self._clock = clock
        self._new_id = new_id

    # -- reads -------------------------------------------------------------------

    def records(self) -> list[VolumeRecord]:
        out = []
        for path in sorted(self._files.volumes.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                out.append(decode_volume(path.read_bytes()))
            except FileNotFoundError:
                continue  # deleted meanwhile
        return out

    def get(self, name: str) -> VolumeRecord:
        try:
            return decode_volume(self._files.volume_record(name).read_bytes())
        except FileNotFoundError:
            raise NotFound(f"volume {name!r} does not exist in this pool", field="name") from None

    def exists(self, name: str) -> bool:
        return self._files.volume_record(name).exists()

    def layer_path(self, volume: VolumeRecord, layer_id: str) -> Path:
        return self._files.layer(volume.uid, layer_id)

    def active_path(self, volume: VolumeRecord) -> Path:
        return self.layer_path(volume, volume.active)

    def allocated(self, volume: VolumeRecord, layer_id: str | None = None) -> int:
        """Bytes the volume's own layers (or one layer) take on disk; the shared base is not counted."""
        ids = [layer_id] if layer_id is not None else [x.id for x in volume.layers]
        return sum(_allocated(self.layer_path(volume, i)) for i in ids)

    def base_path(self, base: BaseImage) -> Path:
        return self._files.cache / base.cache_name

    def provisioned(self) -> int:
        return sum(v.virtual_size for v in self.records())

    # -- volumes -----------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        size: int | None,
        base: BaseImage | None = None,
        base_size: int = 0,
        qos: Qos | None = None,
        description: str = "",
        reserve: ReserveFn = lambda _: None,
    ) -> VolumeRecord:
        """An empty thin volume, or (with ``base``, already in the cache) a linked clone
        of at least the base's size. The caller holds the base's cache lock."""
        if size is None:
            if base is None:
                raise InvalidArgument(
                    "an empty volume needs a size", field="volume.size_bytes", reason="BAD_SIZE"
                )
            size = base_size
        validate.size(size, field="volume.size_bytes")
        if size < base_size:
            raise InvalidArgument(
                f"size {size} is smaller than the image's virtual size {base_size}",
                field="volume.size_bytes",
                reason="BAD_SIZE",
            )

        async def fill(path: Path) -> None:
            if base is not None:
                await self._qemu.create(
                    path, size=size, backing=self.base_path(base), backing_format=base.format
                )
            else:
                await self._qemu.create(path, size=size)

        return await self._make(
            name=name,
            size=size,
            fill=fill,
            base=base,
            qos=qos or Qos(),
            description=description,
            reserve=reserve,
        )

    async def _make(
        self,
        *,
        name: str,
        size: int,
        fill: Callable[[Path], Awaitable[None]],
        base: BaseImage | None,
        qos: Qos,
        description: str,
        reserve: ReserveFn,
    ) -> VolumeRecord:
        """A new one-layer volume whose layer ``fill`` writes; the record is the commit point."""
        async with self._locks.hold(f"volume-{name}"):
            if self.exists(name):
                raise AlreadyExists(f"volume {name!r} already exists in this pool", field="volume_id")
            reserve(size)
            uid, layer = self._new_id(), self._new_id()
            entry = self._journal.begin("create", name, uid=uid)
            try:
                self._files.volume_dir(uid).mkdir(parents=True)
                await fill(self._files.layer(uid, layer))
                now = self._clock()
                record = VolumeRecord(
                    name=name,
                    uid=uid,
                    virtual_size=size,
                    create_time=now,
                    active=layer,
                    layers=(Layer(id=layer, parent=None, create_time=now),),
                    base=base,
                    qos=qos,
                    description=description,
                )
                self._write(record)
            except BaseException:
                self._undo_create(name, uid)
                raise
            finally:
                self._journal.end(entry)
            return record

    async def clone(
        self,
        *,
        source: str,
        snapshot: str | None,
        name: str,
        progress: ProgressFn = _no_progress,
        reserve: ReserveFn = lambda _: None,
    ) -> VolumeRecord:
        """A new independent volume with the content of ``source`` (now, or at
        ``snapshot``); it shares only the read-only image base, if any."""
        src = self.get(source)
        top = self._usable_snapshot(src, snapshot).layer if snapshot is not None else src.active
        size = (await self._qemu.info(self.layer_path(src, top))).virtual_size
        base = src.base

        async def fill(dest: Path) -> None:
            if base is None:
                await self._qemu.convert(
                    self.layer_path(src, top), dest, source_format="qcow2", progress=progress
                )
                return
            # convert -B only copies what the top layer holds, not the layers between
            # it and the base; a safe rebase compares the whole chain.
            await self._qemu.create(dest, size=size, backing=self.layer_path(src, top))
            await self._qemu.rebase(dest, self.base_path(base), backing_format=base.format, progress=progress)

        return await self._make(
            name=name,
            size=size,
            fill=fill,
            base=base,
            qos=src.qos,
            description=src.description,
            reserve=reserve,
        )

    async def resize(self, name: str, size: int, *, reserve: ReserveFn = lambda _: None) -> VolumeRecord:
        validate.size(size, field="size_bytes")
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if size < record.virtual_size:
                raise InvalidArgument(
                    f"volumes only grow: {size} is less than the current {record.virtual_size} bytes "
                    "(shrinking would cut off guest data)",
                    field="size_bytes",
                    reason="SHRINK_REFUSED",
                )
            if size == record.virtual_size:
                return record
            reserve(size - record.virtual_size)
            entry = self._journal.begin("resize", name, uid=record.uid)
            try:
                await self._qemu.resize(self.active_path(record), size)
                record = replace(record, virtual_size=size)
                self._write(record)
            finally:
                # A failed resize leaves the image as it was (qemu-img writes the new
                # size last); nothing to finish.
                self._journal.end(entry)
            return record

    async def delete(self, name: str, *, force: bool = False) -> VolumeRecord:
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if record.attached_to and not force:
                raise FailedPrecondition(
                    f"volume {name!r} is attached to {', '.join(record.attached_to)}; detach it first "
                    "or delete with force",
                    reason="VOLUME_ATTACHED",
                )
            entry = self._journal.begin("delete", name, uid=record.uid)
            # Commit point: once the record is renamed away the volume is gone.
            os.replace(self._files.volume_record(name), self._deleted_record(record.uid))
            self._finish_delete(record.uid)
            self._journal.end(entry)
            return record

    async def update(
        self,
        name: str,
        *,
        qos: Qos | None = None,
        description: str | None = None,
    ) -> VolumeRecord:
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if qos is not None:
                record = replace(record, qos=validate.qos(qos, field="volume.qos"))
            if description is not None:
                record = replace(record, description=description)
            self._write(record)
            return record

    async def attach(self, name: str, consumer: str) -> VolumeRecord:
        """Records that ``consumer`` (a VM) uses the volume; used by compute."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if consumer not in record.attached_to:
                record = replace(record, attached_to=(*record.attached_to, consumer))
                self._write(record)
            return record

    async def detach(self, name: str, consumer: str) -> VolumeRecord:
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            record = replace(record, attached_to=tuple(c for c in record.attached_to if c != consumer))
            self._write(record)
            return record

    async def flatten(self, name: str, *, progress: ProgressFn = _no_progress) -> VolumeRecord:
        """Copies the base image's data into the volume's bottom layer so it no longer
        depends on the image cache. Safe to cancel: the volume stays linked."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if record.base is None:
                raise FailedPrecondition(f"volume {name!r} is not linked to an image", reason="NOT_LINKED")
            self._check_detached(record, "flatten")
            bottom = next(x for x in record.layers if x.parent is None)
            entry = self._journal.begin("flatten", name, uid=record.uid, layer=bottom.id)
            try:
                await self._qemu.rebase(self.layer_path(record, bottom.id), None, progress=progress)
            except BaseException:
                # Rebase changes the header last: the layer is still the linked clone it was.
                self._journal.end(entry)
                raise
            record = replace(record, base=None)
            self._write(record)
            self._journal.end(entry)
            return record

    async def flatten_attached(
        self, name: str, copy: CopyFn, *, progress: ProgressFn = _no_progress
    ) -> VolumeRecord:
        """Flattens a volume a VM holds: ``copy`` (the VM's live block pull, or an offline
        rebase while it is stopped) streams the image's data into the volume's only
        layer and drops the backing link last, so stopping half-way leaves the volume
        linked as it was. A volume with snapshots is refused (the copy would merge
        them away)."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if record.base is None:
                raise FailedPrecondition(f"volume {name!r} is not linked to an image", reason="NOT_LINKED")
            if len(record.layers) != 1:
                raise FailedPrecondition(
                    f"volume {name!r} has snapshots; an attached volume is flattened only without them",
                    reason="VOLUME_HAS_SNAPSHOTS",
                )
            layer = record.layers[0].id
            entry = self._journal.begin("flatten-attached", name, uid=record.uid, layer=layer)
            try:
                await copy(self.layer_path(record, layer), progress)
            except BaseException:
                self._journal.end(entry)
                raise
            record = replace(record, base=None)
            self._write(record)
            self._journal.end(entry)
            return record

    # -- snapshots ---------------------------------------------------------------

    async def snapshot(
        self, name: str, snapshot: str, *, description: str = "", switch: SwitchFn | None = None
    ) -> SnapshotRecord:
        """Freezes the active layer as ``snapshot`` and puts a new one on top. A volume
        a VM holds needs the holder's ``switch`` (a live external snapshot in QEMU, or
        a new definition while the VM is stopped)."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            if record.snapshot(snapshot) is not None:
                raise AlreadyExists(
                    f"volume {name!r} already has a snapshot {snapshot!r}", field="snapshot_id"
                )
            if switch is None:
                self._check_detached(record, "snapshot")
            layer = self._new_id()
            entry = self._journal.begin("snapshot", name, uid=record.uid, layer=layer)
            path = self.layer_path(record, layer)
            try:
                await self._qemu.create(path, size=record.virtual_size, backing=self.active_path(record))
                now = self._clock()
                snap = SnapshotRecord(
                    name=snapshot,
                    layer=record.active,
                    parent=record.current_snapshot,
                    create_time=now,
                    description=description,
                )
                # The record names the new layer before the VM moves onto it: a crash
                # in between leaves an empty overlay the record keeps (recovery sees
                # it active), never a layer the VM writes that recovery would delete.
                self._write(
                    replace(
                        record,
                        active=layer,
                        layers=(*record.layers, Layer(id=layer, parent=record.active, create_time=now)),
                        snapshots=(*record.snapshots, snap),
                        current_snapshot=snapshot,
                    )
                )
                if switch is not None:
                    try:
                        # Shielded: a cancel must not undo a switch QEMU may be making.
                        with trio.CancelScope(shield=True):
                            await switch(self.active_path(record), path)
                    except BaseException:
                        self._write(record)  # the VM refused: it still writes the old layer
                        raise
            except BaseException:
                if self.get(name).active != layer:
                    path.unlink(missing_ok=True)
                raise
            finally:
                self._journal.end(entry)
            return snap

    async def revert(self, name: str, snapshot: str) -> VolumeRecord:
        """The volume's content becomes the snapshot's; what was written since is dropped."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            snap = self._usable_snapshot(record, snapshot)
            self._check_detached(record, "revert")
            layer = self._new_id()
            old = record.active
            entry = self._journal.begin("revert", name, uid=record.uid, layer=layer, old=old)
            path = self.layer_path(record, layer)
            frozen = self.layer_path(record, snap.layer)
            try:
                size = (await self._qemu.info(frozen)).virtual_size
                await self._qemu.create(path, size=size, backing=frozen)
                record = replace(
                    record,
                    virtual_size=size,
                    active=layer,
                    layers=(
                        *(x for x in record.layers if x.id != old),
                        Layer(id=layer, parent=snap.layer, create_time=self._clock()),
                    ),
                    current_snapshot=snapshot,
                )
                self._write(record)
            except BaseException:
                if self.get(name).active != layer:
                    path.unlink(missing_ok=True)
                self._journal.end(entry)
                raise
            self.layer_path(record, old).unlink(missing_ok=True)
            self._journal.end(entry)
            return record

    async def delete_snapshot(
        self, name: str, snapshot: str, *, progress: ProgressFn = _no_progress
    ) -> VolumeRecord:
        """Removes the snapshot and merges its layer's data into the layers that need it."""
        async with self._locks.hold(f"volume-{name}"):
            record = self.get(name)
            snap = self._snapshot(record, snapshot)
            self._check_detached(record, "delete a snapshot of")
            plan, children = self._delete_plan(record, snap)
            entry = self._journal.begin(
                "delete-snapshot", name, uid=record.uid, snapshot=snapshot, plan=plan, children=children
            )
            try:
                # First: the snapshot can no longer be used (a merge changes its layer).
                snap = replace(snap, deleting=True)
                record = replace(
                    record, snapshots=tuple(snap if s.name == snapshot else s for s in record.snapshots)
                )
                self._write(record)
                record = await self._merge(record, snap, plan, children, progress)
            finally:
                # Done, or failed with every remaining layer still intact: deleting again
                # plans afresh from the layers as they are then.
                self._journal.end(entry)
            return record

    def _delete_plan(self, record: VolumeRecord, snap: SnapshotRecord) -> tuple[str, list[str]]:
        """How to get rid of the snapshot's layer L:
        - "drop": nothing is built on L (its successor was discarded by a revert);
        - "commit": one layer C on L, smaller than L: write C into L, then L takes
          C's file name (C's content is unchanged: C overrides every block it holds);
        - "pull": otherwise, each layer on L copies in what it reads from L (qemu-img
          rebase onto L's parent), then L is deleted.
        Both merges keep every remaining layer's content while they run, so a crash
        at any point is finished by running the plan again."""
        children = [x.id for x in record.children(snap.layer)]
        if not children:
            return "drop", children
        if len(children) == 1 and self.allocated(record, children[0]) <= self.allocated(record, snap.layer):
            return "commit", children
        return "pull", children

    async def _merge(
        self,
        record: VolumeRecord,
        snap: SnapshotRecord,
        plan: str,
        children: list[str],
        progress: ProgressFn,
    ) -> VolumeRecord:
        frozen = self.layer_path(record, snap.layer)
        if plan == "commit":
            child = self.layer_path(record, children[0])
            if frozen.exists():
                await self._qemu.commit(child, progress=progress)
                os.replace(frozen, child)
        elif plan == "pull":
            target = self._backing_of(record, snap.layer)
            fmt = (
                record.base.format
                if record.base is not None and record.layer(snap.layer).parent is None
                else "qcow2"
            )
            for i, child_id in enumerate(children):

                def step(p: float, i: int = i) -> None:
                    progress((i * 100 + p) / len(children))

                await self._qemu.rebase(
                    self.layer_path(record, child_id), target, backing_format=fmt, progress=step
                )
        record = _without_snapshot(record, snap, plan, children)
        self._write(record)
        if plan != "commit":
            frozen.unlink(missing_ok=True)
        progress(100.0)
        return record

    def _backing_of(self, record: VolumeRecord, layer_id: str) -> Path | None:
        parent = record.layer(layer_id).parent
        if parent is not None:
            return self.layer_path(record, parent)
        return self.base_path(record.base) if record.base is not None else None

    # -- recovery ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Finishes or undoes every journaled operation; returns what it did."""
        done = []
        for entry in self._journal.pending():
            if entry.verb == "import":
                continue  # the image store's
            async with self._locks.hold(f"volume-{entry.subject}"):
                if not self._journal.open(entry):
                    continue
                done.append(f"{entry.verb} {entry.subject}: {await self._recover(entry)}")
                self._journal.end(entry)
        return done

    async def _recover(self, entry: Entry) -> str:
        name, uid = entry.subject, str(entry.data["uid"])
        current = self._current(name, uid)
        if entry.verb == "create":
            if current is not None:
                return "completed"
            self._undo_create(name, uid)
            return "rolled back"
        if entry.verb == "delete":
            if current is not None:
                return "rolled back (record still present)"
            self._finish_delete(uid)
            return "completed"
        if current is None:
            return "volume gone"
        if entry.verb == "resize":
            size = (await self._qemu.info(self.active_path(current))).virtual_size
            self._write(replace(current, virtual_size=size))
            return f"size is {size}"
        if entry.verb in ("snapshot", "revert"):
            layer = str(entry.data["layer"])
            if current.active == layer:
                if entry.verb == "revert":
                    self.layer_path(current, str(entry.data["old"])).unlink(missing_ok=True)
                return "completed"
            self.layer_path(current, layer).unlink(missing_ok=True)
            return "rolled back"
        if entry.verb == "flatten-attached":
            # The copy belonged to a VM (maybe still running it): only read what it did.
            info = await self._qemu.info(self.layer_path(current, str(entry.data["layer"])))
            if info.backing_file is None and current.base is not None:
                self._write(replace(current, base=None))
                return "completed"
            return "rolled back" if current.base is not None else "completed"
        if entry.verb == "flatten":
            if current.base is None:
                return "completed"
            await self._qemu.rebase(self.layer_path(current, str(entry.data["layer"])), None)
            self._write(replace(current, base=None))
            return "completed"
        if entry.verb == "delete-snapshot":
            snap = current.snapshot(str(entry.data["snapshot"]))
            if snap is None:
                return "completed"
            children = [str(c) for c in entry.data["children"]]
            await self._merge(current, snap, str(entry.data["plan"]), children, _no_progress)
            return "completed"
        raise FailedPrecondition(f"unknown journal entry {entry.verb!r} for {name!r}", reason="JOURNAL")

    # -- helpers -------------------------------------------------------------------

    def _current(self, name: str, uid: str) -> VolumeRecord | None:
        try:
            record = self.get(name)
        except NotFound:
            return None
        return record if record.uid == uid else None

    def _snapshot(self, record: VolumeRecord, snapshot: str) -> SnapshotRecord:
        snap = record.snapshot(snapshot)
        if snap is None:
            raise NotFound(f"volume {record.name!r} has no snapshot {snapshot!r}", field="name")
        return snap

    def _usable_snapshot(self, record: VolumeRecord, snapshot: str) -> SnapshotRecord:
        snap = self._snapshot(record, snapshot)
        if snap.deleting:
            raise FailedPrecondition(
                f"snapshot {snapshot!r} of volume {record.name!r} is being deleted (or a delete was "
                "interrupted): it can only be deleted",
                reason="SNAPSHOT_DELETING",
            )
        return snap

    def _check_detached(self, record: VolumeRecord, what: str) -> None:
        # Running guests hold their chain open; live block jobs come with compute.
        if record.attached_to:
            raise FailedPrecondition(
                f"cannot {what} volume {record.name!r} while it is attached to "
                f"{', '.join(record.attached_to)}",
                reason="VOLUME_ATTACHED",
            )

    def _write(self, record: VolumeRecord) -> None:
        write_atomic(self._files.volume_record(record.name), encode(record), mode=0o644)

    def _deleted_record(self, uid: str) -> Path:
        return self._files.volumes / f".deleted-{uid}.json"

    def _undo_create(self, name: str, uid: str) -> None:
        # Only files no record points to: the layers of a volume that never came to be.
        if self._current(name, uid) is None:
            shutil.rmtree(self._files.volume_dir(uid), ignore_errors=True)

    def _finish_delete(self, uid: str) -> None:
        shutil.rmtree(self._files.volume_dir(uid), ignore_errors=True)
        self._deleted_record(uid).unlink(missing_ok=True)


def _without_snapshot(
    record: VolumeRecord, snap: SnapshotRecord, plan: str, children: list[str]
) -> VolumeRecord:
    gone = snap.layer
    parent = record.layer(gone).parent
    layers = []
    for layer in record.layers:
        if layer.id != gone:
            layers.append(replace(layer, parent=parent) if layer.id in children else layer)
    snapshots = tuple(
        replace(s, parent=snap.parent) if s.parent == snap.name else s
        for s in record.snapshots
        if s.name != snap.name
    )
    current = snap.parent if record.current_snapshot == snap.name else record.current_snapshot
    return replace(record, layers=tuple(layers), snapshots=snapshots, current_snapshot=current)


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0
