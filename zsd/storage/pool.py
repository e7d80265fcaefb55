"""One active pool on this host: its driver, its volumes and images, and the
capacity rules that hold between them."""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from zsd.errors import InvalidArgument, ResourceExhausted, Unsupported
from zsd.storage.images import Downloader, ImageStore
from zsd.storage.journal import Journal
from zsd.storage.locks import FileLocks
from zsd.storage.model import Capacity, ImageRecord, Qos, VolumeRecord
from zsd.storage.pools.base import PoolDriver
from zsd.storage.pools.files import PoolFiles
from zsd.storage.qemuimg import ProgressFn, QemuImg
from zsd.storage.volumes import CopyFn, ReserveFn, VolumeStore


class StoragePool:
    def __init__(
        self,
        driver: PoolDriver,
        *,
        qemu: QemuImg,
        download: Downloader,
        locks: FileLocks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``locks``: the pool's locks when this host had it open before (a lock is
        held per process, so two handles of one pool must share their task locks)."""
        self.driver = driver
        caps = driver.capabilities
        if not (caps.thin and caps.images):
            raise Unsupported(
                f"pool {driver.spec.name!r} ({driver.spec.kind.value}) cannot hold qcow2 volumes "
                "and images on this host",
                reason="UNSUPPORTED_POOL",
            )
        files = PoolFiles(driver.root)
        self.files = files
        self.locks = locks or FileLocks(files.locks)
        journal = Journal(files.journal)
        self.volumes = VolumeStore(files, qemu=qemu, locks=self.locks, journal=journal, clock=clock)
        self.images = ImageStore(
            files, qemu=qemu, locks=self.locks, journal=journal, download=download, clock=clock
        )

    @property
    def name(self) -> str:
        return self.driver.spec.name

    async def recover(self) -> list[str]:
        return await self.images.recover() + await self.volumes.recover()

    async def capacity(self) -> Capacity:
        physical = await self.driver.physical()
        return Capacity(
            size=physical.size, used=physical.used, free=physical.free, provisioned=self.volumes.provisioned()
        )

    async def room(self, field: str) -> ReserveFn:
        """A check for ``n`` more provisioned bytes against the over-provisioning limit.
        Binding only under the pool's capacity lock (then two creations cannot both
        pass it); without it, an early answer for the caller."""
        cap = await self.capacity()
        ratio = self.driver.spec.max_overcommit
        limit = int(cap.size * ratio)

        def reserve(extra: int) -> None:
            if extra > limit:
                raise InvalidArgument(
                    f"{extra} bytes is beyond pool {self.name!r}: at most {limit} bytes "
                    f"({ratio:g} x its {cap.size} bytes) can be provisioned in it",
                    field=field,
                    reason="BEYOND_POOL",
                )
            if cap.provisioned + extra > limit:
                raise ResourceExhausted(
                    f"pool {self.name!r} would be over-provisioned: {cap.provisioned} + {extra} bytes "
                    f"exceeds {limit} ({ratio:g} x {cap.size} bytes; raise max_overcommit to allow more)",
                    reason="POOL_OVERCOMMITTED",
                )

        return reserve

    async def create_volume(
        self,
        *,
        name: str,
        size: int | None,
        image: ImageRecord | None = None,
        image_pool: StoragePool | None = None,
        qos: Qos | None = None,
        description: str = "",
    ) -> VolumeRecord:
        async with self.locks.hold("capacity"):
            reserve = await self.room("volume.size_bytes")
            if image is None:
                return await self.volumes.create(
                    name=name, size=size, qos=qos, description=description, reserve=reserve
                )
            source = image_pool or self
            async with self.images.cache_lock(image.sha256):
                # A copy when the image lives on another filesystem: not on the event loop.
                base = await trio.to_thread.run_sync(self.images.cache, image, source.images.data_path(image))
                try:
                    return await self.volumes.create(
                        name=name,
                        size=size,
                        base=base,
                        base_size=image.virtual_size,
                        qos=qos,
                        description=description,
                        reserve=reserve,
                    )
                except BaseException:
                    self.images.release(base, self._base_in_use)
                    raise

    async def clone_volume(
        self, *, source: str, snapshot: str | None, name: str, progress: ProgressFn
    ) -> VolumeRecord:
        async with self.locks.hold("capacity"):
            reserve = await self.room("volume_id")
            return await self.volumes.clone(
                source=source, snapshot=snapshot, name=name, progress=progress, reserve=reserve
            )

    async def resize_volume(self, name: str, size: int) -> VolumeRecord:
        async with self.locks.hold("capacity"):
            return await self.volumes.resize(name, size, reserve=await self.room("size_bytes"))

    async def delete_volume(self, name: str, *, force: bool) -> VolumeRecord:
        record = await self.volumes.delete(name, force=force)
        await self._release(record)
        return record

    async def flatten_volume(self, name: str, *, progress: ProgressFn) -> VolumeRecord:
        before = self.volumes.get(name)
        record = await self.volumes.flatten(name, progress=progress)
        await self._release(before)
        return record

    async def flatten_attached(self, name: str, copy: CopyFn, *, progress: ProgressFn) -> VolumeRecord:
        """``Volumes.flatten_attached``, then the image cache entry is released."""
        before = self.volumes.get(name)
        record = await self.volumes.flatten_attached(name, copy, progress=progress)
        await self._release(before)
        return record

    async def _release(self, volume: VolumeRecord) -> None:
        if volume.base is not None:
            async with self.images.cache_lock(volume.base.sha256):
                self.images.release(volume.base, self._base_in_use)

    def _base_in_use(self, sha256: str) -> bool:
        return any(v.base is not None and v.base.sha256 == sha256 for v in self.volumes.records())

    def allocated(self, volume: VolumeRecord) -> int:
        return self.volumes.allocated(volume)
