"""Which driver serves which kind of pool."""

from __future__ import annotations

import time
from collections.abc import Callable

from zsd.storage.model import PoolKind
from zsd.storage.pools.base import PoolDriver, PoolSpec
from zsd.storage.pools.local_dir import LocalDirPool
from zsd.storage.pools.shared_fs import SharedFsPool


def driver_factory(
    *,
    host: str,
    shared_block: Callable[[PoolSpec], PoolDriver],
    clock: Callable[[], float] = time.time,
) -> Callable[[PoolSpec], PoolDriver]:
    def make(spec: PoolSpec) -> PoolDriver:
        if spec.kind is PoolKind.LOCAL_DIR:
            return LocalDirPool(spec, host=host, clock=clock)
        if spec.kind is PoolKind.SHARED_FS:
            return SharedFsPool(spec, host=host, clock=clock)
        return shared_block(spec)

    return make
