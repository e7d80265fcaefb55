"""Builds this host's storage from its paths: the drivers of every pool kind,
qemu-img and the downloader."""

from __future__ import annotations

from zsd.paths import Paths
from zsd.storage.download import http_download
from zsd.storage.host import StorageHost
from zsd.storage.lvmcli import BlockDevices, Lvm
from zsd.storage.pools.base import PoolDriver, PoolSpec
from zsd.storage.pools.registry import driver_factory
from zsd.storage.pools.shared_block import SharedBlockPool
from zsd.storage.qemuimg import QemuImg


def open_storage(*, paths: Paths, host: str) -> StorageHost:
    block = BlockDevices(sysfs=paths.sysfs, procfs=paths.procfs)

    def shared_block(spec: PoolSpec) -> PoolDriver:
        luns = [d for d in (block.device_for_wwid(w) for w in spec.wwids) if d is not None]
        return SharedBlockPool(spec, lvm=Lvm(devices=luns), host=block)

    return StorageHost(
        registry=paths.pool_registry,
        host=host,
        make_driver=driver_factory(host=host, shared_block=shared_block),
        qemu=QemuImg(),
        download=http_download,
    )
