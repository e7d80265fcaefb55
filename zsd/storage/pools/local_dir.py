"""``local-dir``: a directory on one host's own disks (the embedded default pool).

Thin qcow2 volumes, snapshots and linked clones, an image store and cache; VMs
using it can only run on its host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from zsd.errors import FailedPrecondition, InvalidArgument
from zsd.storage.model import Capabilities
from zsd.storage.pools.base import Physical, PoolSpec
from zsd.storage.pools.files import PoolFiles

FILE_CAPABILITIES = dict(thin=True, snapshots=True, linked_clones=True, images=True)


def check_path(spec: PoolSpec) -> Path:
    path = Path(spec.path)
    if not spec.path or not path.is_absolute() or ".." in path.parts:
        raise InvalidArgument(
            f"a {spec.kind.value} pool needs an absolute directory path without '..', got {spec.path!r}",
            field="pool.path",
            reason="BAD_PATH",
        )
    return path


def statvfs(path: Path) -> Physical:
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return Physical(size=size, used=size - st.f_bfree * st.f_frsize, free=free)


class DirPool:
    """What the directory-based drivers share: a spec, a root and statvfs capacity."""

    def __init__(self, spec: PoolSpec, *, host: str, clock: Callable[[], float] = time.time) -> None:
        self._spec = spec
        self._host = host
        self._clock = clock
        self._files = PoolFiles(check_path(spec))

    @property
    def spec(self) -> PoolSpec:
        return self._spec

    @property
    def root(self) -> Path:
        return self._files.root

    async def physical(self) -> Physical:
        return statvfs(self._files.root)


class LocalDirPool(DirPool):
    capabilities = Capabilities(shared=False, **FILE_CAPABILITIES)

    async def create(self) -> None:
        root = self._files.root
        if root.exists() and not root.is_dir():
            raise FailedPrecondition(f"{root} exists and is not a directory", reason="BAD_PATH")
        found = self._files.read_marker() if root.is_dir() else None
        if found is not None and found.get("uid") != self._spec.uid:
            raise FailedPrecondition(
                f"{root} already holds pool {found.get('name')!r}; pick another directory",
                reason="POOL_IN_USE",
            )
        root.mkdir(parents=True, exist_ok=True)
        if found is None:
            self._files.write_marker(
                uid=self._spec.uid, name=self._spec.name, host=self._host, now=self._clock()
            )
        self._files.make_dirs()

    async def activate(self) -> None:
        self._files.check_marker(uid=self._spec.uid, name=self._spec.name)
        self._files.make_dirs()
