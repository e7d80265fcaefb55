"""Pool definitions of a cluster: one ``pool`` record per pool in cluster.db, written
by the leader, followed by every host.

A member defines a pool once, for the whole cluster: the host serving CreatePool
prepares the storage (directory and marker, or the shared VG) and the leader
commits the definition; every host then activates it as its kind says (a shared
pool on every host that sees it, a local-dir pool on its own host only) and
reports the pool's state in its Host. Each host's embedded ``default`` pool stays
its own (like Proxmox's per-node "local"), so that name is not a cluster pool.
"""

from __future__ import annotations

import logging

import trio

from zsd.cluster.hostctl import fingerprint
from zsd.cluster.replica import Replica
from zsd.cluster.store import Create, Delete, StoreService, Update
from zsd.errors import AlreadyExists, NotFound
from zsd.storage.host import DEFAULT_POOL, StorageHost
from zsd.storage.pools.base import PoolSpec

log = logging.getLogger(__name__)

KIND_POOL = "pool"
RESYNC = 5.0
"""Seconds between looks at the definitions even without a change notice."""


def cluster_specs(replica: Replica) -> dict[str, PoolSpec]:
    return {r.name: PoolSpec.decode(r.data) for r in replica.cache.list(KIND_POOL)}


async def commit_create(store: StoreService, spec: PoolSpec, *, request_id: str) -> int:
    if spec.name == DEFAULT_POOL:
        raise AlreadyExists(
            f"{DEFAULT_POOL!r} is every host's own local pool; pick another name", field="pool_id"
        )
    result = await store.commit(
        [Create(kind=KIND_POOL, name=spec.name, data=spec.encode())],
        request_id=request_id,
        fingerprint=fingerprint("CreatePool", spec.name, spec.uid),
    )
    return result.revision


async def commit_update(store: StoreService, spec: PoolSpec) -> int:
    """The whole definition (a retry writes the same again: harmless)."""
    result = await store.commit([Update(kind=KIND_POOL, name=spec.name, data=spec.encode())])
    return result.revision


async def commit_delete(store: StoreService, name: str) -> int:
    if await store.get(KIND_POOL, name) is None:
        raise NotFound(f"pool {name!r} does not exist", field="name")
    result = await store.commit([Delete(kind=KIND_POOL, name=name)])
    return result.revision


async def follow(replica: Replica, storage: StorageHost, *, resync: float = RESYNC) -> None:
    """Keeps this host's cluster pools in step with the definitions in its state copy."""
    await replica.synced.wait()
    seen = -1
    while True:
        revision = replica.revision
        if revision != seen:
            try:
                await storage.sync_cluster(cluster_specs(replica))
            except Exception:
                log.exception("could not apply the cluster's pool definitions (will retry)")
                await trio.sleep(1.0)
            else:
                seen = revision
            continue
        with trio.move_on_after(resync):
            await replica.wait_changed()
