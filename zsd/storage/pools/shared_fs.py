"""``shared-fs``: a directory on a filesystem every host mounts at the same path
(NFS, CephFS, GFS2...), holding qcow2 files.

The host that defines the pool writes the marker; every other host only checks
it. A host that finds no marker never writes one: an empty directory there
usually means the share is not mounted, and a local pool posing as the shared
one would split the data. Each host that sees the right marker records itself
under ``.zsd-pool.hosts/``, which is the per-host pool state every host can read.
"""

from __future__ import annotations

from zsd.errors import FailedPrecondition
from zsd.storage.model import Capabilities
from zsd.storage.pools.local_dir import FILE_CAPABILITIES, DirPool


class SharedFsPool(DirPool):
    capabilities = Capabilities(shared=True, **FILE_CAPABILITIES)

    async def create(self) -> None:
        root = self._files.root
        if not root.is_dir():
            raise FailedPrecondition(
                f"{root} is not a directory on this host: mount the shared filesystem first",
                reason="NOT_MOUNTED",
            )
        found = self._files.read_marker()
        if found is not None and found.get("uid") != self._spec.uid:
            raise FailedPrecondition(
                f"{root} already holds pool {found.get('name')!r}; pick another directory",
                reason="POOL_IN_USE",
            )
        if found is None:
            self._files.write_marker(
                uid=self._spec.uid, name=self._spec.name, host=self._host, now=self._clock()
            )
        self._files.make_dirs()
        self._files.record_host(self._host, self._clock())

    async def activate(self) -> None:
        if not self._files.root.is_dir():
            raise FailedPrecondition(f"{self._files.root} does not exist on this host", reason="NOT_MOUNTED")
        self._files.check_marker(uid=self._spec.uid, name=self._spec.name)
        self._files.make_dirs()
        self._files.record_host(self._host, self._clock())

    def hosts_seen(self) -> dict[str, float]:
        """Every host that has verified the marker, and when it last did."""
        return self._files.hosts_seen()
