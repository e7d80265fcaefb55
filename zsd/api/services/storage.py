"""StorageService: pools, images, volumes and snapshots of the serving host.

Every call runs on the trio side against ``StorageHost``; the slow ones (imports,
volume creation and copies, flatten, snapshot merges) run as Operations with
progress, and a repeated request_id returns the operation it started.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import grpc
from google.protobuf import empty_pb2

from zsd.api import paging, storageconv, storagenames
from zsd.api.gateway import Gateway
from zsd.api.opstart import start_operation
from zsd.api.poolcluster import ClusterPools
from zsd.api.router import Router, forwarded
from zsd.cluster.control import ClusterControl
from zsd.cluster.operations import OperationRegistry, Progress
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.storage import validate
from zsd.storage.host import StorageHost
from zsd.storage.httpget import validate_sha256, validate_url
from zsd.storage.images import ImageSource
from zsd.storage.model import ImageRecord, Qos
from zsd.storage.pool import StoragePool
from zsd.v1 import host_pb2, operation_pb2, storage_pb2, storage_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
N = TypeVar("N", bound="_Named")

QosChanged = Callable[[str, str, Qos], Awaitable[object]]
"""(pool, volume, new QoS): called before the volume's record changes."""


class SnapshotAttached(Protocol):
    """Takes a snapshot of a volume a VM holds (pool, volume, snapshot)."""

    async def __call__(self, pool: str, volume: str, snapshot: str, *, description: str) -> None: ...


_POOL_MUTABLE = {"max_overcommit", "description"}
_VOLUME_MUTABLE = {"qos", "description"}


class StorageService(storage_pb2_grpc.StorageServiceServicer):
    def __init__(
        self,
        *,
        gateway: Gateway,
        storage: StorageHost,
        operations: OperationRegistry,
        control: ClusterControl | None = None,
        router: Router | None = None,
        clock: Callable[[], float] = time.time,
        qos_changed: QosChanged | None = None,
        snapshot_attached: SnapshotAttached | None = None,
    ) -> None:
        """``control``: a cluster member's state copy, whose host reports say how every
        other host sees its pools (without it, only this host's view is known).
        ``qos_changed``: applies a volume's new QoS to the VM using it (compute).
        ``snapshot_attached``: snapshots a volume a VM holds, under the VM (compute)."""
        self._qos_changed = qos_changed
        self._snapshot_attached = snapshot_attached
        self._gw = gateway
        self._storage = storage
        self._ops = operations
        self._control = control
        self._clock = clock
        self._cluster = (
            ClusterPools(gateway=gateway, storage=storage, control=control, router=router)
            if control is not None and router is not None
            else None
        )

    def _reports(self) -> dict[str, dict[str, host_pb2.HostPool]]:
        """pool name -> host name -> that host's report (this host's own, live)."""
        by_pool: dict[str, dict[str, host_pb2.HostPool]] = {}
        if self._control is not None:
            for view in self._control.host_views():
                if view.status is not None and view.entry.name != self._storage.host:
                    for report in host_pb2.Host.FromString(view.status).pools:
                        by_pool.setdefault(report.pool.removeprefix("pools/"), {})[view.entry.name] = report
        for report in storageconv.host_pools(self._storage.states):
            by_pool.setdefault(report.pool.removeprefix("pools/"), {})[self._storage.host] = report
        return by_pool

    async def _pool_message(self, name: str) -> storage_pb2.Pool:
        """On the trio side."""
        view = await self._storage.view(name)
        return storageconv.pool(view, self._reports().get(name, {}))

    async def _operation(
        self,
        context: Ctx,
        *,
        verb: str,
        target: str,
        request_id: str,
        job: Callable[[Progress], Awaitable[object]],
    ) -> operation_pb2.Operation:
        return await start_operation(
            self._gw, self._ops, verb=verb, target=target, request_id=request_id, job=job, now=self._clock()
        )

    # -- pools -----------------------------------------------------------------------

    async def ListPools(
        self, request: storage_pb2.ListPoolsRequest, context: Ctx
    ) -> storage_pb2.ListPoolsResponse:
        async def run(req: storage_pb2.ListPoolsRequest) -> storage_pb2.ListPoolsResponse:
            async def views() -> list[storage_pb2.Pool]:
                return [await self._pool_message(n) for n in self._storage.names()]

            pools = await self._gw.trio(context, views)
            page = paging.paginate(
                pools, key=lambda p: p.name, page_size=req.page_size, page_token=req.page_token
            )
            return storage_pb2.ListPoolsResponse(pools=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetPool(self, request: storage_pb2.GetPoolRequest, context: Ctx) -> storage_pb2.Pool:
        async def run(req: storage_pb2.GetPoolRequest) -> storage_pb2.Pool:
            name = storagenames.pool(req.name)
            return await self._gw.trio(context, lambda: self._pool_message(name))

        return await self._gw.handle(context, run, request)

    async def CreatePool(self, request: storage_pb2.CreatePoolRequest, context: Ctx) -> storage_pb2.Pool:
        async def run(req: storage_pb2.CreatePoolRequest) -> storage_pb2.Pool:
            spec = req.pool
            kind = storageconv.pool_kind(spec.kind)
            overcommit = spec.max_overcommit or None

            if self._cluster is not None:
                answer = await self._cluster.create(context, req, kind)
                if answer is not None:
                    return answer
                return await self._gw.trio(context, lambda: self._pool_message(req.pool_id))

            async def create() -> storage_pb2.Pool:
                await self._storage.create_pool(
                    name=req.pool_id,
                    kind=kind,
                    path=spec.path,
                    vg_name=spec.vg_name,
                    wwids=tuple(spec.wwids),
                    max_overcommit=overcommit,
                    description=spec.description,
                )
                return await self._pool_message(req.pool_id)

            return await self._gw.trio(context, create)

        return await self._gw.handle(context, run, request)

    async def UpdatePool(self, request: storage_pb2.UpdatePoolRequest, context: Ctx) -> storage_pb2.Pool:
        async def run(req: storage_pb2.UpdatePoolRequest) -> storage_pb2.Pool:
            name = storagenames.pool(req.pool.name, field="pool.name")
            paths = set(_mask(req.update_mask.paths, _POOL_MUTABLE))
            if self._cluster is not None and (
                forwarded(context) or await self._gw.trio_sync(lambda: self._storage.is_cluster_pool(name))
            ):
                answer = await self._cluster.update(context, req, name, paths)
                if answer is not None:
                    return answer
                return await self._gw.trio(context, lambda: self._pool_message(name))

            async def update() -> storage_pb2.Pool:
                await self._storage.update_pool(
                    name,
                    max_overcommit=req.pool.max_overcommit if "max_overcommit" in paths else None,
                    description=req.pool.description if "description" in paths else None,
                )
                return await self._pool_message(name)

            return await self._gw.trio(context, update)

        return await self._gw.handle(context, run, request)

    async def DeletePool(self, request: storage_pb2.DeletePoolRequest, context: Ctx) -> empty_pb2.Empty:
        async def run(req: storage_pb2.DeletePoolRequest) -> empty_pb2.Empty:
            name = storagenames.pool(req.name)
            if self._cluster is not None and (
                forwarded(context) or await self._gw.trio_sync(lambda: self._storage.is_cluster_pool(name))
            ):
                await self._cluster.delete(context, req, name)
                return empty_pb2.Empty()
            await self._gw.trio(context, lambda: self._storage.delete_pool(name))
            return empty_pb2.Empty()

        return await self._gw.handle(context, run, request)

    # -- images ----------------------------------------------------------------------

    async def ListImages(
        self, request: storage_pb2.ListImagesRequest, context: Ctx
    ) -> storage_pb2.ListImagesResponse:
        async def run(req: storage_pb2.ListImagesRequest) -> storage_pb2.ListImagesResponse:
            name = storagenames.pool(req.parent, field="parent")

            def images() -> list[storage_pb2.Image]:
                return [storageconv.image(name, r) for r in self._storage.pool(name).images.records()]

            page = _page(await self._gw.trio_sync(images), req)
            return storage_pb2.ListImagesResponse(images=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetImage(self, request: storage_pb2.GetImageRequest, context: Ctx) -> storage_pb2.Image:
        async def run(req: storage_pb2.GetImageRequest) -> storage_pb2.Image:
            n = storagenames.parse(req.name, "image")
            return await self._gw.trio_sync(
                lambda: storageconv.image(n.pool, self._storage.pool(n.pool).images.get(n.image))
            )

        return await self._gw.handle(context, run, request)

    async def ImportImage(
        self, request: storage_pb2.ImportImageRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def run(req: storage_pb2.ImportImageRequest) -> operation_pb2.Operation:
            pool_name = storagenames.pool(req.parent, field="parent")
            image_id = storagenames.parse(
                f"pools/{pool_name}/images/{req.image_id}", "image", field="image_id"
            ).image
            source = _image_source(req.source)
            fmt = storageconv.image_format(req.format)
            pool = await self._gw.trio_sync(lambda: self._storage.pool(pool_name))

            async def job(progress: Progress) -> storage_pb2.Image:
                record = await pool.images.import_image(
                    name=image_id,
                    source=source,
                    format=fmt,
                    description=req.description,
                    progress=lambda p, m: progress(max(p, -1), m),
                )
                return storageconv.image(pool_name, record)

            return await self._operation(
                context,
                verb="ImportImage",
                target=f"pools/{pool_name}/images/{image_id}",
                request_id=req.request_id,
                job=job,
            )

        return await self._gw.handle(context, run, request)

    async def DeleteImage(self, request: storage_pb2.DeleteImageRequest, context: Ctx) -> empty_pb2.Empty:
        async def run(req: storage_pb2.DeleteImageRequest) -> empty_pb2.Empty:
            n = storagenames.parse(req.name, "image")
            await self._gw.trio(context, lambda: self._storage.pool(n.pool).images.delete(n.image))
            return empty_pb2.Empty()

        return await self._gw.handle(context, run, request)

    # -- volumes ---------------------------------------------------------------------

    def _volume(self, pool: StoragePool, name: str) -> storage_pb2.Volume:
        record = pool.volumes.get(name)
        return storageconv.volume(pool.name, record, allocated=pool.allocated(record))

    async def ListVolumes(
        self, request: storage_pb2.ListVolumesRequest, context: Ctx
    ) -> storage_pb2.ListVolumesResponse:
        async def run(req: storage_pb2.ListVolumesRequest) -> storage_pb2.ListVolumesResponse:
            name = storagenames.pool(req.parent, field="parent")

            def volumes() -> list[storage_pb2.Volume]:
                pool = self._storage.pool(name)
                return [
                    storageconv.volume(name, r, allocated=pool.allocated(r)) for r in pool.volumes.records()
                ]

            page = _page(await self._gw.trio_sync(volumes), req)
            return storage_pb2.ListVolumesResponse(volumes=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetVolume(self, request: storage_pb2.GetVolumeRequest, context: Ctx) -> storage_pb2.Volume:
        async def run(req: storage_pb2.GetVolumeRequest) -> storage_pb2.Volume:
            n = storagenames.parse(req.name, "volume")
            return await self._gw.trio_sync(lambda: self._volume(self._storage.pool(n.pool), n.volume))

        return await self._gw.handle(context, run, request)

    async def CreateVolume(
        self, request: storage_pb2.CreateVolumeRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def run(req: storage_pb2.CreateVolumeRequest) -> operation_pb2.Operation:
            pool_name = storagenames.pool(req.parent, field="parent")
            volume_id = storagenames.parse(
                f"pools/{pool_name}/volumes/{req.volume_id}", "volume", field="volume_id"
            ).volume
            spec = req.volume
            qos = storageconv.qos(spec.qos)
            source = req.WhichOneof("source")
            image_name = storagenames.parse(req.image, "image", field="image") if source == "image" else None
            copy_of = None
            if source == "source_volume":
                copy_of = storagenames.parse(req.source_volume, "volume", field="source_volume")
            elif source == "source_snapshot":
                copy_of = storagenames.parse(req.source_snapshot, "snapshot", field="source_snapshot")
            if copy_of is not None and copy_of.pool != pool_name:
                raise FailedPrecondition(
                    f"{copy_of} is in pool {copy_of.pool!r}; copies are made within one pool "
                    f"(create the volume in pools/{copy_of.pool})",
                    field=source,
                    reason="OTHER_POOL",
                )

            validate.qos(qos, field="volume.qos")
            if image_name is None and copy_of is None:
                validate.size(spec.size_bytes, field="volume.size_bytes")

            async def prepare() -> tuple[StoragePool, ImageRecord | None, StoragePool | None]:
                # What can be refused now is refused by the call rather than by the
                # operation (the job checks again under the pool's locks).
                pool = self._storage.pool(pool_name)
                if pool.volumes.exists(volume_id):
                    raise AlreadyExists(
                        f"pools/{pool_name}/volumes/{volume_id} already exists", field="volume_id"
                    )
                image = image_pool = None
                if image_name is not None:
                    image_pool = self._storage.pool(image_name.pool)
                    image = image_pool.images.get(image_name.image)
                size = spec.size_bytes or (image.virtual_size if image is not None else 0)
                if size and copy_of is None:
                    (await pool.room("volume.size_bytes"))(size)
                return pool, image, image_pool

            pool, image, image_pool = await self._gw.trio(context, prepare)

            async def job(progress: Progress) -> storage_pb2.Volume:
                if copy_of is not None:
                    progress(0, f"copying {copy_of}")
                    record = await pool.clone_volume(
                        source=copy_of.volume,
                        snapshot=copy_of.snapshot or None,
                        name=volume_id,
                        progress=lambda p: progress(int(p), None),
                    )
                    if spec.description or not qos.unlimited:
                        record = await pool.volumes.update(
                            volume_id,
                            qos=qos if not qos.unlimited else None,
                            description=spec.description or None,
                        )
                else:
                    record = await pool.create_volume(
                        name=volume_id,
                        size=spec.size_bytes or None,
                        image=image,
                        image_pool=image_pool,
                        qos=qos,
                        description=spec.description,
                    )
                return storageconv.volume(pool_name, record, allocated=pool.allocated(record))

            return await self._operation(
                context,
                verb="CreateVolume",
                target=f"pools/{pool_name}/volumes/{volume_id}",
                request_id=req.request_id,
                job=job,
            )

        return await self._gw.handle(context, run, request)

    async def UpdateVolume(
        self, request: storage_pb2.UpdateVolumeRequest, context: Ctx
    ) -> storage_pb2.Volume:
        async def run(req: storage_pb2.UpdateVolumeRequest) -> storage_pb2.Volume:
            n = storagenames.parse(req.volume.name, "volume", field="volume.name")
            paths = set(_mask(req.update_mask.paths, _VOLUME_MUTABLE))
            qos = storageconv.qos(req.volume.qos) if "qos" in paths else None
            description = req.volume.description if "description" in paths else None

            async def update() -> storage_pb2.Volume:
                pool = self._storage.pool(n.pool)
                if qos is not None:
                    validate.qos(qos, field="volume.qos")
                    if self._qos_changed is not None:
                        # Live first: limits QEMU refuses leave the record as it was.
                        await self._qos_changed(n.pool, n.volume, qos)
                await pool.volumes.update(n.volume, qos=qos, description=description)
                return self._volume(pool, n.volume)

            return await self._gw.trio(context, update)

        return await self._gw.handle(context, run, request)

    async def ResizeVolume(
        self, request: storage_pb2.ResizeVolumeRequest, context: Ctx
    ) -> storage_pb2.Volume:
        async def run(req: storage_pb2.ResizeVolumeRequest) -> storage_pb2.Volume:
            n = storagenames.parse(req.name, "volume")

            async def resize() -> storage_pb2.Volume:
                pool = self._storage.pool(n.pool)
                await pool.resize_volume(n.volume, req.size_bytes)
                return self._volume(pool, n.volume)

            return await self._gw.trio(context, resize)

        return await self._gw.handle(context, run, request)

    async def DeleteVolume(self, request: storage_pb2.DeleteVolumeRequest, context: Ctx) -> empty_pb2.Empty:
        async def run(req: storage_pb2.DeleteVolumeRequest) -> empty_pb2.Empty:
            n = storagenames.parse(req.name, "volume")
            await self._gw.trio(
                context, lambda: self._storage.pool(n.pool).delete_volume(n.volume, force=req.force)
            )
            return empty_pb2.Empty()

        return await self._gw.handle(context, run, request)

    async def FlattenVolume(
        self, request: storage_pb2.FlattenVolumeRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def run(req: storage_pb2.FlattenVolumeRequest) -> operation_pb2.Operation:
            n = storagenames.parse(req.name, "volume")

            def check() -> StoragePool:
                pool = self._storage.pool(n.pool)
                if pool.volumes.get(n.volume).base is None:
                    raise FailedPrecondition(f"{n} is not linked to an image", reason="NOT_LINKED")
                return pool

            pool = await self._gw.trio_sync(check)

            async def job(progress: Progress) -> storage_pb2.Volume:
                progress(0, "copying the image data into the volume")
                await pool.flatten_volume(n.volume, progress=lambda p: progress(int(p), None))
                return self._volume(pool, n.volume)

            return await self._operation(
                context, verb="FlattenVolume", target=str(n), request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    # -- snapshots -------------------------------------------------------------------

    def _snapshots(self, n: storagenames.StorageName) -> list[storage_pb2.Snapshot]:
        pool = self._storage.pool(n.pool)
        record = pool.volumes.get(n.volume)
        volume_name = f"pools/{n.pool}/volumes/{n.volume}"
        return [
            storageconv.snapshot(volume_name, record, s, size=pool.volumes.allocated(record, s.layer))
            for s in record.snapshots
        ]

    async def ListSnapshots(
        self, request: storage_pb2.ListSnapshotsRequest, context: Ctx
    ) -> storage_pb2.ListSnapshotsResponse:
        async def run(req: storage_pb2.ListSnapshotsRequest) -> storage_pb2.ListSnapshotsResponse:
            n = storagenames.parse(req.parent, "volume", field="parent")
            page = _page(await self._gw.trio_sync(lambda: self._snapshots(n)), req)
            return storage_pb2.ListSnapshotsResponse(
                snapshots=page.items, next_page_token=page.next_page_token
            )

        return await self._gw.handle(context, run, request)

    async def GetSnapshot(
        self, request: storage_pb2.GetSnapshotRequest, context: Ctx
    ) -> storage_pb2.Snapshot:
        async def run(req: storage_pb2.GetSnapshotRequest) -> storage_pb2.Snapshot:
            n = storagenames.parse(req.name, "snapshot")
            return await self._gw.trio_sync(lambda: _find(self._snapshots(n), str(n)))

        return await self._gw.handle(context, run, request)

    async def CreateSnapshot(
        self, request: storage_pb2.CreateSnapshotRequest, context: Ctx
    ) -> storage_pb2.Snapshot:
        async def run(req: storage_pb2.CreateSnapshotRequest) -> storage_pb2.Snapshot:
            vol = storagenames.parse(req.parent, "volume", field="parent")
            n = storagenames.parse(f"{vol}/snapshots/{req.snapshot_id}", "snapshot", field="snapshot_id")

            async def create() -> storage_pb2.Snapshot:
                pool = self._storage.pool(n.pool)
                description = req.snapshot.description
                if pool.volumes.get(n.volume).attached_to and self._snapshot_attached is not None:
                    await self._snapshot_attached(n.pool, n.volume, n.snapshot, description=description)
                else:
                    await pool.volumes.snapshot(n.volume, n.snapshot, description=description)
                return _find(self._snapshots(n), str(n))

            return await self._gw.trio(context, create)

        return await self._gw.handle(context, run, request)

    async def RevertSnapshot(
        self, request: storage_pb2.RevertSnapshotRequest, context: Ctx
    ) -> storage_pb2.Volume:
        async def run(req: storage_pb2.RevertSnapshotRequest) -> storage_pb2.Volume:
            n = storagenames.parse(req.name, "snapshot")

            async def revert() -> storage_pb2.Volume:
                pool = self._storage.pool(n.pool)
                await pool.volumes.revert(n.volume, n.snapshot)
                return self._volume(pool, n.volume)

            return await self._gw.trio(context, revert)

        return await self._gw.handle(context, run, request)

    async def DeleteSnapshot(
        self, request: storage_pb2.DeleteSnapshotRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def run(req: storage_pb2.DeleteSnapshotRequest) -> operation_pb2.Operation:
            n = storagenames.parse(req.name, "snapshot")

            def check() -> StoragePool:
                pool = self._storage.pool(n.pool)
                if pool.volumes.get(n.volume).snapshot(n.snapshot) is None:
                    raise NotFound(f"{n} does not exist", field="name")
                return pool

            pool = await self._gw.trio_sync(check)

            async def job(progress: Progress) -> storage_pb2.Volume:
                progress(0, "merging the snapshot's data")
                await pool.volumes.delete_snapshot(
                    n.volume, n.snapshot, progress=lambda p: progress(int(p), None)
                )
                return self._volume(pool, n.volume)

            return await self._operation(
                context, verb="DeleteSnapshot", target=str(n), request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)


class _Named(Protocol):
    name: str


class _ListRequest(Protocol):
    parent: str
    page_size: int
    page_token: str


def _page(items: Sequence[N], req: _ListRequest) -> paging.Page[N]:
    """A page of a collection under ``req.parent``, in name order."""
    return paging.paginate(
        items, key=lambda i: i.name, page_size=req.page_size, page_token=req.page_token, query=req.parent
    )


def _mask(paths: Iterable[str], allowed: set[str]) -> list[str]:
    got = list(paths)
    if not got:
        raise InvalidArgument(
            f"update_mask must name the fields to change: {', '.join(sorted(allowed))}", field="update_mask"
        )
    for path in got:
        if path not in allowed:
            raise InvalidArgument(
                f"{path!r} cannot be updated; mutable fields: {', '.join(sorted(allowed))}",
                field="update_mask.paths",
            )
    return [str(p) for p in got]


def _image_source(source: storage_pb2.ImageSource) -> ImageSource:
    which = source.WhichOneof("location")
    sha = validate_sha256(source.sha256, field="source.sha256") if source.sha256 else ""
    if which == "url":
        return ImageSource(url=validate_url(source.url, field="source.url"), sha256=sha)
    if which == "path":
        if not source.path.startswith("/"):
            raise InvalidArgument(
                f"{source.path!r} is not an absolute path on the serving host", field="source.path"
            )
        return ImageSource(path=source.path, sha256=sha)
    raise InvalidArgument("set source.url (http or https) or source.path", field="source")


def _find(snapshots: list[storage_pb2.Snapshot], name: str) -> storage_pb2.Snapshot:
    for snap in snapshots:
        if snap.name == name:
            return snap
    raise NotFound(f"{name} does not exist", field="name")
