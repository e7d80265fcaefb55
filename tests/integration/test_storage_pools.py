"""Pool definitions on hosts: the embedded default pool, shared-fs pools seen by
two hosts through their marker, and the refusals that keep data safe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tests.integration.storagekit import MiB, no_download
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unsupported
from zsd.storage.host import DEFAULT_POOL, StorageHost
from zsd.storage.model import PoolKind
from zsd.storage.pools.base import PoolDriver, PoolSpec, PoolState
from zsd.storage.pools.files import MARKER
from zsd.storage.pools.registry import driver_factory
from zsd.storage.qemuimg import QemuImg


def no_block(spec: PoolSpec) -> PoolDriver:
    raise Unsupported(f"no shared-block driver in this test ({spec.name})")


def storage_host(state: Path, name: str) -> StorageHost:
    return StorageHost(
        registry=state / name / "pools",
        host=name,
        make_driver=driver_factory(host=name, shared_block=no_block),
        qemu=QemuImg(),
        download=no_download,
    )


async def test_a_host_with_no_pools_gets_the_default_pool(tmp_path: Path) -> None:
    h = storage_host(tmp_path, "h1")
    await h.start(default_dir=tmp_path / "default")
    view = await h.view(DEFAULT_POOL)
    assert (view.spec.kind, view.spec.host, view.status.state) == (PoolKind.LOCAL_DIR, "h1", PoolState.ACTIVE)
    assert view.capacity is not None and view.capacity.size > 0 and view.capacity.provisioned == 0
    await h.pool(DEFAULT_POOL).create_volume(name="v", size=MiB)
    # Restarted, it finds the same pool (and does not make another).
    again = storage_host(tmp_path, "h1")
    await again.start(default_dir=tmp_path / "other-default")
    assert again.names() == [DEFAULT_POOL]
    assert [v.name for v in again.pool(DEFAULT_POOL).volumes.records()] == ["v"]


async def test_shared_fs_pool_is_verified_by_each_host(tmp_path: Path) -> None:
    share = tmp_path / "nfs"
    share.mkdir()
    h1, h2 = storage_host(tmp_path, "h1"), storage_host(tmp_path, "h2")
    await h1.start()
    await h2.start()
    created = await h1.create_pool(name="shared", kind=PoolKind.SHARED_FS, path=str(share))
    assert created.status.state is PoolState.ACTIVE and created.capabilities is not None
    assert created.capabilities.shared
    # The second host defines the pool by the same name and path: it joins it (same uid).
    seen = await h2.create_pool(name="shared", kind=PoolKind.SHARED_FS, path=str(share))
    assert seen.spec.uid == created.spec.uid
    assert seen.status.state is PoolState.ACTIVE and set(seen.hosts) == {"h1", "h2"}
    await h1.pool("shared").create_volume(name="v", size=MiB)
    assert [v.name for v in h2.pool("shared").volumes.records()] == ["v"]
    # Under another name the same directory is someone else's pool.
    h3 = storage_host(tmp_path, "h3")
    await h3.start()
    with pytest.raises(FailedPrecondition) as e:
        await h3.create_pool(name="other", kind=PoolKind.SHARED_FS, path=str(share))
    assert e.value.reason == "POOL_IN_USE"


async def test_a_host_that_does_not_see_the_share_reports_why(tmp_path: Path) -> None:
    share, elsewhere = tmp_path / "nfs", tmp_path / "not-mounted"
    share.mkdir()
    h1, h2 = storage_host(tmp_path, "h1"), storage_host(tmp_path, "h2")
    await h1.start()
    created = await h1.create_pool(name="shared", kind=PoolKind.SHARED_FS, path=str(share))
    # h2 has the pool at a path where the share is not mounted: an empty directory.
    elsewhere.mkdir()
    (h2._registry).mkdir(parents=True)
    spec_at_h2 = json.loads(created.spec.encode())
    spec_at_h2["path"] = str(elsewhere)
    (h2._registry / "shared.json").write_text(json.dumps(spec_at_h2))
    await h2.start()
    view = await h2.view("shared")
    assert (view.status.state, view.status.reason) == (PoolState.ERROR, "POOL_MARKER_MISSING")
    assert not (elsewhere / MARKER).exists()  # never claims an empty mountpoint
    with pytest.raises(FailedPrecondition) as e:
        h2.pool("shared")
    assert e.value.reason == "POOL_NOT_ACTIVE" and "mounted" in e.value.message
    # Another pool's marker there: the wrong filesystem.
    (elsewhere / MARKER).write_text(json.dumps({"uid": "someone-else", "name": "other"}))
    view = await h2.view("shared")
    assert (view.status.state, view.status.reason) == (PoolState.ERROR, "POOL_MARKER_MISMATCH")
    # "Mounting" the share (the right marker) makes it active on the next look.
    (elsewhere / MARKER).write_bytes((share / MARKER).read_bytes())
    assert (await h2.view("shared")).status.state is PoolState.ACTIVE


async def test_definition_errors(tmp_path: Path) -> None:
    h = storage_host(tmp_path, "h1")
    await h.start()
    with pytest.raises(InvalidArgument) as e:
        await h.create_pool(name="a/b", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "x"))
    assert e.value.field == "pool_id"
    with pytest.raises(InvalidArgument) as e:
        await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path="relative")
    assert e.value.field == "pool.path"
    with pytest.raises(InvalidArgument) as e:
        await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path="/srv/../etc")
    assert e.value.field == "pool.path"
    with pytest.raises(FailedPrecondition) as refused:
        await h.create_pool(name="p", kind=PoolKind.SHARED_FS, path=str(tmp_path / "absent"))
    assert refused.value.reason == "NOT_MOUNTED"
    with pytest.raises(InvalidArgument) as e:
        await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"), max_overcommit=0.5)
    assert e.value.field == "pool.max_overcommit"
    assert h.names() == [] and list(h._registry.iterdir()) == []
    await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))
    with pytest.raises(AlreadyExists):
        await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "q"))
    with pytest.raises(FailedPrecondition) as refused:
        await h.create_pool(name="q", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))
    assert refused.value.reason == "POOL_IN_USE"
    # A directory holding another cluster's (or a forgotten) pool is not taken over either.
    other = storage_host(tmp_path, "h9")
    await other.start()
    with pytest.raises(FailedPrecondition) as refused:
        await other.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))
    assert refused.value.reason == "POOL_IN_USE"


async def test_delete_pool_only_when_empty_and_keeps_the_directory(tmp_path: Path) -> None:
    h = storage_host(tmp_path, "h1")
    await h.start()
    await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))
    (tmp_path / "p" / "someone-elses-file").write_text("keep me")
    await h.pool("p").create_volume(name="v", size=MiB)
    with pytest.raises(FailedPrecondition) as e:
        await h.delete_pool("p")
    assert e.value.reason == "POOL_NOT_EMPTY"
    await h.pool("p").delete_volume("v", force=False)
    await h.delete_pool("p")
    assert h.names() == [] and sorted(p.name for p in (tmp_path / "p").iterdir()) == ["someone-elses-file"]
    with pytest.raises(NotFound):
        await h.view("p")
    # The directory can hold a new pool now.
    await h.create_pool(name="p2", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))


async def test_update_pool_overcommit(tmp_path: Path) -> None:
    h = storage_host(tmp_path, "h1")
    await h.start()
    await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"), max_overcommit=1.0)
    cap = (await h.view("p")).capacity
    assert cap is not None
    too_big = (cap.size + MiB) // 512 * 512
    with pytest.raises(InvalidArgument):
        await h.pool("p").create_volume(name="v", size=too_big)
    await h.update_pool("p", max_overcommit=4.0)
    await h.pool("p").create_volume(name="v", size=too_big)
    assert (await h.view("p")).spec.max_overcommit == 4.0


async def test_the_monitor_follows_a_share_going_away_and_back(tmp_path: Path) -> None:
    share = tmp_path / "nfs"
    share.mkdir()
    h = storage_host(tmp_path, "h1")
    await h.start()
    await h.create_pool(name="shared", kind=PoolKind.SHARED_FS, path=str(share))
    marker = (share / MARKER).read_bytes()
    assert dict(h.states)["shared"].state is PoolState.ACTIVE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.monitor, 0.05)
        (share / MARKER).unlink()  # as if the NFS mount vanished under the directory
        with trio.fail_after(5):
            while dict(h.states)["shared"].state is not PoolState.ERROR:
                await trio.sleep(0.02)
        assert dict(h.states)["shared"].reason == "POOL_MARKER_MISSING"
        with pytest.raises(FailedPrecondition):
            h.pool("shared")
        (share / MARKER).write_bytes(marker)
        with trio.fail_after(5):
            while dict(h.states)["shared"].state is not PoolState.ACTIVE:
                await trio.sleep(0.02)
        assert h.pool("shared").name == "shared"
        nursery.cancel_scope.cancel()


async def test_a_definition_that_cannot_be_saved_leaves_no_marker(tmp_path: Path) -> None:
    h = storage_host(tmp_path, "h1")
    await h.start()
    h._registry.rmdir()
    h._registry.write_text("not a directory")  # the registry write will fail
    with pytest.raises(OSError):
        await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))
    assert list((tmp_path / "p").iterdir()) == [] and h.names() == []
    h._registry.unlink()
    await h.create_pool(name="p", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "p"))  # a retry works


async def test_cluster_definitions_are_applied_and_withdrawn(tmp_path: Path) -> None:
    h1, h2 = storage_host(tmp_path, "h1"), storage_host(tmp_path, "h2")
    await h1.start(default_dir=tmp_path / "h1-default")
    await h2.start(default_dir=tmp_path / "h2-default")
    share = tmp_path / "nfs"
    share.mkdir()
    shared, fresh = await h1.prepare_pool(name="shared", kind=PoolKind.SHARED_FS, path=str(share))
    local, _ = await h1.prepare_pool(name="fast", kind=PoolKind.LOCAL_DIR, path=str(tmp_path / "fast"))
    assert fresh and h1.names() == ["default"]  # prepared, not defined yet
    cluster = {"shared": shared, "fast": local}
    for h in (h1, h2):
        await h.sync_cluster(cluster)
    assert (
        dict(h1.states)["shared"].state is PoolState.ACTIVE
        and dict(h2.states)["shared"].state is PoolState.ACTIVE
    )
    assert dict(h1.states)["fast"].state is PoolState.ACTIVE
    assert (dict(h2.states)["fast"].state, dict(h2.states)["fast"].reason) == (
        PoolState.INACTIVE,
        "OTHER_HOST",
    )
    assert h1.is_cluster_pool("shared") and not h1.is_cluster_pool("default")
    # A changed limit is followed without re-activation; a withdrawn pool is forgotten.
    await h2.sync_cluster({"shared": replace(shared, max_overcommit=2.0)})
    assert h2.spec("shared").max_overcommit == 2.0 and "fast" not in h2.names()
    # A cluster pool by the name of a host's own pool leaves the host's own in place.
    await h2.sync_cluster({"default": replace(shared, name="default")})
    assert h2.spec("default").kind is PoolKind.LOCAL_DIR and not h2.is_cluster_pool("default")
    assert "shared" not in h2.names()
