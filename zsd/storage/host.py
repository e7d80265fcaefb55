"""The pools this host knows: their definitions, which are active here, and why
the others are not.

Definitions are kept as one JSON file per pool under the host's state directory
(written atomically; the file is the commit point of defining a pool). A host
defines the same shared pool by its path; the pool's marker proves it is the
same storage.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ZsdError
from zsd.storage import validate
from zsd.storage.images import Downloader
from zsd.storage.locks import FileLocks
from zsd.storage.model import Capabilities, Capacity, PoolKind
from zsd.storage.pool import StoragePool
from zsd.storage.pools.base import PoolDriver, PoolSpec, PoolState, PoolStatus
from zsd.storage.pools.files import MARKER, PoolFiles
from zsd.storage.qemuimg import QemuImg
from zsd.util.fsutil import write_atomic

log = logging.getLogger(__name__)

DEFAULT_POOL = "default"

DriverFactory = Callable[[PoolSpec], PoolDriver]


@dataclass(frozen=True, kw_only=True)
class PoolView:
    spec: PoolSpec
    status: PoolStatus
    capabilities: Capabilities | None
    capacity: Capacity | None
    hosts: dict[str, float] = field(default_factory=dict)
    """Shared pools: each host that verified the pool's marker, and when."""


class StorageHost:
    def __init__(
        self,
        *,
        registry: Path,
        host: str,
        make_driver: DriverFactory,
        qemu: QemuImg,
        download: Downloader,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._registry = registry
        self.host = host
        self._make_driver = make_driver
        self._qemu = qemu
        self._download = download
        self._clock = clock
        self._new_id = new_id
        self._specs: dict[str, PoolSpec] = {}
        self._active: dict[str, StoragePool] = {}
        self._cluster: set[str] = set()
        """Names defined by the cluster (cluster.db), not by this host's registry."""
        self._status: dict[str, PoolStatus] = {}
        self._locks: dict[str, FileLocks] = {}
        self.states: tuple[tuple[str, PoolStatus], ...] = ()
        """Every pool's state here, replaced whole on each change (read from any thread)."""

    async def start(self, *, default_dir: Path | None = None) -> None:
        """Loads the definitions and activates what this host can reach; with
        ``default_dir`` and no pools at all, defines the local "default" pool there."""
        self._registry.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._registry.glob("*.json")):
            spec = PoolSpec.decode(path.read_bytes())
            self._specs[spec.name] = spec
        if not self._specs and default_dir is not None:
            await self.create_pool(
                name=DEFAULT_POOL,
                kind=PoolKind.LOCAL_DIR,
                path=str(default_dir),
                description="this host's disk",
            )
        for spec in list(self._specs.values()):
            await self._activate(spec)

    def _set_status(self, name: str, status: PoolStatus | None) -> None:
        if status is None:
            self._status.pop(name, None)
        else:
            self._status[name] = status
        self.states = tuple(sorted(self._status.items()))

    async def _activate(self, spec: PoolSpec) -> None:
        self._active.pop(spec.name, None)
        if spec.kind is PoolKind.LOCAL_DIR and spec.host != self.host:
            self._set_status(
                spec.name,
                PoolStatus(
                    state=PoolState.INACTIVE, reason="OTHER_HOST", message=f"a local pool of host {spec.host}"
                ),
            )
            return
        try:
            driver = self._make_driver(spec)
            await driver.activate()
            pool = StoragePool(
                driver,
                qemu=self._qemu,
                download=self._download,
                locks=self._locks.get(spec.uid),
                clock=self._clock,
            )
            self._locks[spec.uid] = pool.locks
            for line in await pool.recover():
                log.warning("pool %s: recovered interrupted operation: %s", spec.name, line)
        except ZsdError as e:
            log.warning("pool %s is not usable on this host: %s", spec.name, e)
            self._set_status(spec.name, PoolStatus(state=PoolState.ERROR, reason=e.reason, message=e.message))
            return
        self._active[spec.name] = pool
        self._set_status(spec.name, PoolStatus(state=PoolState.ACTIVE))

    async def monitor(self, interval: float) -> None:
        """Checks every pool again every ``interval`` seconds: a share that went away
        (or came back) changes the pool's state here without a restart. Calls already
        running on a pool that fails keep their handle; new ones are refused."""
        while True:
            await trio.sleep(interval)
            for spec in list(self._specs.values()):
                pool = self._active.get(spec.name)
                if pool is None:
                    await self._activate(spec)
                    continue
                try:
                    await pool.driver.activate()
                except ZsdError as e:
                    log.warning("pool %s is no longer usable on this host: %s", spec.name, e)
                    self._active.pop(spec.name, None)
                    self._set_status(
                        spec.name, PoolStatus(state=PoolState.ERROR, reason=e.reason, message=e.message)
                    )

    # -- reads ---------------------------------------------------------------------

    def spec(self, name: str) -> PoolSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(f"pool {name!r} does not exist", field="name") from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    async def view(self, name: str) -> PoolView:
        spec = self.spec(name)
        if self._status[name].state is PoolState.ERROR:
            await self._activate(spec)  # the filesystem may have been mounted since
        pool = self._active.get(name)
        hosts: dict[str, float] = {}
        if pool is not None and pool.driver.capabilities.shared:
            hosts = pool.files.hosts_seen()
        return PoolView(
            spec=spec,
            status=self._status[name],
            capabilities=pool.driver.capabilities if pool is not None else None,
            capacity=await pool.capacity() if pool is not None else None,
            hosts=hosts,
        )

    def pool(self, name: str) -> StoragePool:
        """The active pool, or why it cannot be used here."""
        spec = self.spec(name)
        pool = self._active.get(name)
        if pool is None:
            status = self._status[name]
            raise FailedPrecondition(
                f"pool {name!r} is not active on host {self.host}: {status.message}",
                reason="POOL_NOT_ACTIVE",
                metadata={"pool": spec.name, "state": status.state.value, "cause": status.reason},
            )
        return pool

    # -- definitions ---------------------------------------------------------------

    def is_cluster_pool(self, name: str) -> bool:
        return name in self._cluster

    async def prepare_pool(
        self,
        *,
        name: str,
        kind: PoolKind,
        path: str = "",
        vg_name: str = "",
        wwids: tuple[str, ...] = (),
        max_overcommit: float | None = None,
        description: str = "",
    ) -> tuple[PoolSpec, bool]:
        """Checks a new pool and prepares its storage; returns the spec and whether this
        call wrote the marker (so that ``undo_prepare`` can take it back)."""
        validate.name(name, field="pool_id")
        if name in self._specs:
            raise AlreadyExists(f"pool {name!r} already exists", field="pool_id")
        spec = PoolSpec(
            name=name,
            uid=self._shared_uid(kind, name, path) or self._new_id(),
            kind=kind,
            path=path,
            host=self.host if kind is PoolKind.LOCAL_DIR else "",
            vg_name=vg_name,
            wwids=wwids,
            create_time=self._clock(),
            description=description,
        )
        if max_overcommit is not None:
            spec = replace(spec, max_overcommit=_overcommit(max_overcommit))
        for other in self._specs.values():
            if other.path and other.path == spec.path:
                raise FailedPrecondition(
                    f"pool {other.name!r} already uses {spec.path}", reason="POOL_IN_USE", field="pool.path"
                )
        driver = self._make_driver(spec)
        fresh = kind is not PoolKind.SHARED_BLOCK and not (Path(path) / MARKER).exists()
        await driver.create()
        return spec, fresh

    def undo_prepare(self, spec: PoolSpec, fresh: bool) -> None:
        """The definition was not saved: the marker this host wrote must not make a
        retry find the directory "in use"."""
        if fresh and spec.path:
            _remove_bookkeeping(Path(spec.path))

    async def create_pool(
        self,
        *,
        name: str,
        kind: PoolKind,
        path: str = "",
        vg_name: str = "",
        wwids: tuple[str, ...] = (),
        max_overcommit: float | None = None,
        description: str = "",
    ) -> PoolView:
        """Defines a pool of this host only (the embedded cluster of one)."""
        spec, fresh = await self.prepare_pool(
            name=name,
            kind=kind,
            path=path,
            vg_name=vg_name,
            wwids=wwids,
            max_overcommit=max_overcommit,
            description=description,
        )
        try:
            write_atomic(self._registry / f"{name}.json", spec.encode(), mode=0o644)
        except BaseException:
            self.undo_prepare(spec, fresh)
            raise
        self._specs[name] = spec
        await self._activate(spec)
        return await self.view(name)

    def _shared_uid(self, kind: PoolKind, name: str, path: str) -> str | None:
        """A shared-fs pool another host already created: this host joins it (same uid)
        when the marker there carries the same pool name."""
        if kind is not PoolKind.SHARED_FS or not path.startswith("/"):
            return None
        found = PoolFiles(Path(path)).read_marker() if Path(path).is_dir() else None
        if found is not None and found.get("name") == name:
            return found.get("uid")
        return None

    def updated_spec(
        self, name: str, *, max_overcommit: float | None = None, description: str | None = None
    ) -> PoolSpec:
        spec = self.spec(name)
        if max_overcommit is not None:
            spec = replace(spec, max_overcommit=_overcommit(max_overcommit))
        if description is not None:
            spec = replace(spec, description=description)
        return spec

    async def update_pool(
        self, name: str, *, max_overcommit: float | None = None, description: str | None = None
    ) -> PoolView:
        spec = self.updated_spec(name, max_overcommit=max_overcommit, description=description)
        write_atomic(self._registry / f"{name}.json", spec.encode(), mode=0o644)
        self._replace_spec(spec)
        return await self.view(name)

    def _replace_spec(self, spec: PoolSpec) -> None:
        self._specs[spec.name] = spec
        pool = self._active.get(spec.name)
        if pool is not None:
            pool.driver = self._make_driver(spec)

    def check_deletable(self, name: str) -> PoolSpec:
        """Only an empty pool, checked where it is active: a pool that still holds
        volumes or images is refused, never emptied."""
        spec = self.spec(name)
        pool = self._active.get(name)
        if pool is None:
            where = (
                f"on host {spec.host}" if spec.kind is PoolKind.LOCAL_DIR else "on a host that has it active"
            )
            raise FailedPrecondition(
                f"pool {name!r} is not active here, so its content cannot be checked: delete it {where}",
                reason="POOL_NOT_ACTIVE",
            )
        volumes, images = pool.volumes.records(), pool.images.records()
        if volumes or images:
            raise FailedPrecondition(
                f"pool {name!r} still holds {len(volumes)} volume(s) and {len(images)} image(s); "
                "delete them first",
                reason="POOL_NOT_EMPTY",
            )
        return spec

    async def delete_pool(self, name: str) -> PoolSpec:
        """Forgets an empty pool of this host. Its directory stays (minus zsd's own
        bookkeeping)."""
        spec = self.check_deletable(name) if name in self._active else self.spec(name)
        (self._registry / f"{name}.json").unlink()
        self._forget(name)
        return spec

    def release_storage(self, spec: PoolSpec) -> None:
        """After a cluster-wide delete: the (empty) directory loses zsd's marker."""
        if spec.path and spec.kind is not PoolKind.SHARED_BLOCK:
            _remove_bookkeeping(Path(spec.path))

    def _forget(self, name: str) -> None:
        spec = self._specs.pop(name)
        self._cluster.discard(name)
        self._set_status(name, None)
        pool = self._active.pop(name, None)
        if (
            pool is not None
            and spec.kind is PoolKind.LOCAL_DIR
            and not (pool.volumes.records() or pool.images.records())
        ):
            _remove_bookkeeping(pool.files.root)

    async def sync_cluster(self, specs: dict[str, PoolSpec]) -> None:
        """Applies the cluster's pool definitions: activates new ones, forgets removed
        ones, follows changed limits. A pool of this host by the same name (defined
        before it joined) keeps the name here and is reported in conflict."""
        for name in sorted(self._cluster - set(specs)):
            log.info("pool %s was deleted from the cluster", name)
            self._forget(name)
        for name, spec in sorted(specs.items()):
            if name in self._specs and name not in self._cluster:
                if self._status[name].reason != "NAME_CONFLICT":
                    log.warning("cluster pool %s has the name of a pool of this host; that one is kept", name)
                continue
            old = self._specs.get(name)
            self._specs[name] = spec
            self._cluster.add(name)
            if old is None or (old.uid, old.kind, old.path, old.host) != (
                spec.uid,
                spec.kind,
                spec.path,
                spec.host,
            ):
                await self._activate(spec)
            elif old != spec:
                self._replace_spec(spec)

    async def wait_synced(self, name: str, spec: PoolSpec | None, timeout: float = 5.0) -> None:
        """Until this host applied a cluster change to ``name`` (``spec`` None: its removal)."""
        with trio.move_on_after(timeout):
            while self._specs.get(name) != spec:
                await trio.sleep(0.02)


def _overcommit(value: float) -> float:
    if not 1.0 <= value <= 1000.0:
        raise InvalidArgument(
            f"max_overcommit must be between 1 (no over-provisioning) and 1000, got {value:g}",
            field="pool.max_overcommit",
            reason="BAD_OVERCOMMIT",
        )
    return value


def _remove_bookkeeping(root: Path) -> None:
    """Only empty directories and zsd's own files; anything else someone put there stays."""
    for sub in (".zsd/journal", ".zsd/tmp", ".zsd/locks", ".zsd", "images", "cache", "volumes"):
        d = root / sub
        if sub == ".zsd/locks":
            for lock in d.glob("*.lock"):
                lock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()
    hosts = root / f"{MARKER}.hosts"
    for f in hosts.glob("*.json"):
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        hosts.rmdir()
    (root / MARKER).unlink(missing_ok=True)
