"""Volumes, snapshots, clones and flatten on a local-dir pool with the real qemu-img:
guest-visible content is checked byte for byte after every chain change."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from tests.integration.storagekit import MiB, backing_of, content, local_pool, make_image, write
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from zsd.storage.images import ImageSource
from zsd.storage.model import Qos
from zsd.storage.pool import StoragePool
from zsd.storage.qemuimg import QemuImg

SIZE = 16 * MiB


@pytest.fixture
async def pool(tmp_path: Path) -> StoragePool:
    return await local_pool(tmp_path / "pool")


async def imported(pool: StoragePool, tmp_path: Path, name: str = "img", pattern: int = 0x5A) -> None:
    src = make_image(tmp_path / f"{name}-src.qcow2", SIZE, pattern=pattern)
    await pool.images.import_image(name=name, source=ImageSource(path=str(src)))


def leftovers(pool: StoragePool) -> list[str]:
    """Files in the pool's temp and journal directories (must be none between operations)."""
    return sorted(p.name for d in (pool.files.tmp, pool.files.journal) for p in d.iterdir())


async def test_empty_volume_is_thin_and_sized(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v1", size=SIZE)
    info = await pool.volumes._qemu.info(pool.volumes.active_path(vol))
    assert (info.format, info.virtual_size, info.backing_file) == ("qcow2", SIZE, None)
    assert pool.allocated(vol) < SIZE // 4
    assert [v.name for v in pool.volumes.records()] == ["v1"]
    assert (await pool.capacity()).provisioned == SIZE
    with pytest.raises(AlreadyExists):
        await pool.create_volume(name="v1", size=SIZE)
    assert leftovers(pool) == []


@pytest.mark.parametrize(
    ("size", "reason"), [(0, "BAD_SIZE"), (-512, "BAD_SIZE"), (1000, "BAD_SIZE"), (1 << 60, "BEYOND_POOL")]
)
async def test_bad_sizes_are_refused_and_leave_nothing(pool: StoragePool, size: int, reason: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        await pool.create_volume(name="v1", size=size)
    assert (e.value.field, e.value.reason) == ("volume.size_bytes", reason)
    assert pool.volumes.records() == [] and list(pool.files.volumes.iterdir()) == []


async def test_over_provisioning_limit(tmp_path: Path) -> None:
    pool = await local_pool(tmp_path / "pool", max_overcommit=1.0)
    size = (await pool.capacity()).size
    half = (size // 2) // 512 * 512
    await pool.create_volume(name="a", size=half)
    with pytest.raises(ResourceExhausted) as e:
        await pool.create_volume(name="b", size=half + 4096)
    assert e.value.reason == "POOL_OVERCOMMITTED"
    with pytest.raises(ResourceExhausted):
        await pool.resize_volume("a", size // 512 * 512 + 512)
    assert [v.name for v in pool.volumes.records()] == ["a"]


async def test_grow_only(pool: StoragePool) -> None:
    await pool.create_volume(name="v", size=SIZE)
    grown = await pool.resize_volume("v", 2 * SIZE)
    assert grown.virtual_size == 2 * SIZE
    assert (await pool.volumes._qemu.info(pool.volumes.active_path(grown))).virtual_size == 2 * SIZE
    with pytest.raises(InvalidArgument) as e:
        await pool.resize_volume("v", SIZE)
    assert e.value.reason == "SHRINK_REFUSED"


async def test_attached_volume_delete_needs_force(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    await pool.volumes.attach("v", "vms/web")
    with pytest.raises(FailedPrecondition) as e:
        await pool.delete_volume("v", force=False)
    assert e.value.reason == "VOLUME_ATTACHED" and "vms/web" in e.value.message
    assert pool.volumes.active_path(vol).exists()
    await pool.delete_volume("v", force=True)
    assert not pool.files.volume_dir(vol.uid).exists() and pool.volumes.records() == []


async def test_qos_is_validated_and_stored(pool: StoragePool) -> None:
    await pool.create_volume(name="v", size=SIZE)
    qos = Qos(read_iops=500, read_iops_max=2000, write_bytes_per_sec=10 * MiB, burst_seconds=30)
    assert (await pool.volumes.update("v", qos=qos)).qos == qos
    assert pool.volumes.get("v").qos == qos
    with pytest.raises(InvalidArgument) as e:
        await pool.volumes.update("v", qos=Qos(total_iops=100, read_iops=50))
    assert e.value.field == "volume.qos.total_iops"
    assert pool.volumes.get("v").qos == qos


async def test_linked_clones_share_one_cached_base(pool: StoragePool, tmp_path: Path) -> None:
    await imported(pool, tmp_path)
    image = pool.images.get("img")
    a = await pool.create_volume(name="a", size=None, image=image)
    b = await pool.create_volume(name="b", size=2 * SIZE, image=image)
    assert a.virtual_size == SIZE and b.virtual_size == 2 * SIZE
    cached = pool.images.cached()
    assert [p.name for p in cached] == [f"{image.sha256}.qcow2"]
    assert os.stat(cached[0]).st_ino == os.stat(pool.images.data_path(image)).st_ino  # a link, not a copy
    assert backing_of(pool.volumes.active_path(a)) == f"../../cache/{image.sha256}.qcow2"
    assert content(pool.volumes.active_path(a), tmp_path)[:MiB] == b"\x5a" * MiB
    # Deleting the image keeps its volumes readable; the last volume takes the cache entry with it.
    await pool.images.delete("img")
    assert content(pool.volumes.active_path(b), tmp_path)[:MiB] == b"\x5a" * MiB
    await pool.delete_volume("a", force=False)
    assert len(pool.images.cached()) == 1
    await pool.delete_volume("b", force=False)
    assert pool.images.cached() == []


async def test_linked_clone_smaller_than_image_is_refused(pool: StoragePool, tmp_path: Path) -> None:
    await imported(pool, tmp_path)
    with pytest.raises(InvalidArgument) as e:
        await pool.create_volume(name="a", size=SIZE // 2, image=pool.images.get("img"))
    assert e.value.reason == "BAD_SIZE"
    assert pool.images.cached() == [] and leftovers(pool) == []


async def snapshots_abc(pool: StoragePool, tmp_path: Path) -> dict[str, bytes]:
    """v with snapshots s1 -> s2 and more writes after each; returns expected contents."""
    await imported(pool, tmp_path)
    vol = await pool.create_volume(name="v", size=None, image=pool.images.get("img"))
    expect = {}
    write(pool.volumes.active_path(vol), 0x11, MiB, MiB)
    expect["s1"] = content(pool.volumes.active_path(vol), tmp_path)
    await pool.volumes.snapshot("v", "s1")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x22, 2 * MiB, 2 * MiB)
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x23, 0, 4096)
    expect["s2"] = content(pool.volumes.active_path(pool.volumes.get("v")), tmp_path)
    await pool.volumes.snapshot("v", "s2")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x33, MiB + 4096, 3 * MiB)
    expect["now"] = content(pool.volumes.active_path(pool.volumes.get("v")), tmp_path)
    assert expect["s1"] != expect["s2"] != expect["now"]
    return expect


def now(pool: StoragePool, tmp_path: Path) -> bytes:
    return content(pool.volumes.active_path(pool.volumes.get("v")), tmp_path)


async def test_snapshot_tree_and_revert(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    vol = pool.volumes.get("v")
    assert [(s.name, s.parent) for s in vol.snapshots] == [("s1", None), ("s2", "s1")]
    assert vol.current_snapshot == "s2" and len(vol.layers) == 3
    await pool.volumes.revert("v", "s1")
    assert now(pool, tmp_path) == expect["s1"]
    assert pool.volumes.get("v").current_snapshot == "s1"
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x44, 0, MiB)
    await pool.volumes.snapshot("v", "s3")  # a branch: s3's parent is s1, beside s2
    assert [(s.name, s.parent) for s in pool.volumes.get("v").snapshots][-1] == ("s3", "s1")
    await pool.volumes.revert("v", "s2")
    assert now(pool, tmp_path) == expect["s2"]
    assert len(list(pool.files.volume_dir(vol.uid).iterdir())) == len(pool.volumes.get("v").layers)


async def test_delete_snapshot_in_the_middle_keeps_every_state(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    await pool.volumes.delete_snapshot("v", "s1")
    vol = pool.volumes.get("v")
    assert [(s.name, s.parent) for s in vol.snapshots] == [("s2", None)]
    assert now(pool, tmp_path) == expect["now"]
    assert content(pool.volumes.layer_path(vol, vol.snapshot("s2").layer), tmp_path) == expect["s2"]  # type: ignore[union-attr]
    assert len(vol.layers) == 2 and len(list(pool.files.volume_dir(vol.uid).iterdir())) == 2
    await pool.volumes.delete_snapshot("v", "s2")
    assert now(pool, tmp_path) == expect["now"]
    assert len(pool.volumes.get("v").layers) == 1 and leftovers(pool) == []


async def test_delete_snapshot_at_the_end_of_the_chain(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    await pool.volumes.delete_snapshot("v", "s2")
    vol = pool.volumes.get("v")
    assert now(pool, tmp_path) == expect["now"]
    assert content(pool.volumes.layer_path(vol, vol.snapshot("s1").layer), tmp_path) == expect["s1"]  # type: ignore[union-attr]
    await pool.volumes.revert("v", "s1")
    assert now(pool, tmp_path) == expect["s1"]


async def test_both_merge_strategies_are_exercised(pool: StoragePool, tmp_path: Path) -> None:
    # Big layer under a small child: commit the child down. Small layer under a big child: pull.
    await pool.create_volume(name="v", size=SIZE)
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x10, 0, 8 * MiB)
    await pool.volumes.snapshot("v", "big")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x20, 0, 4096)
    await pool.volumes.snapshot("v", "small")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x30, 4 * MiB, 8 * MiB)
    vol = pool.volumes.get("v")
    assert pool.volumes._delete_plan(vol, vol.snapshot("big"))[0] == "commit"  # type: ignore[arg-type]
    assert pool.volumes._delete_plan(vol, vol.snapshot("small"))[0] == "pull"  # type: ignore[arg-type]
    before = now(pool, tmp_path)
    await pool.volumes.delete_snapshot("v", "small")
    await pool.volumes.delete_snapshot("v", "big")
    assert now(pool, tmp_path) == before


async def test_revert_then_delete_the_abandoned_branch(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    await pool.volumes.revert("v", "s1")  # s2's layer now has no successor
    await pool.volumes.delete_snapshot("v", "s2")
    assert now(pool, tmp_path) == expect["s1"]
    await pool.volumes.delete_snapshot("v", "s1")
    assert now(pool, tmp_path) == expect["s1"]
    vol = pool.volumes.get("v")
    assert vol.snapshots == () and vol.current_snapshot is None and len(vol.layers) == 1


async def test_clone_from_a_snapshot_and_from_now(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    c1 = await pool.clone_volume(source="v", snapshot="s1", name="c1", progress=lambda _: None)
    c2 = await pool.clone_volume(source="v", snapshot=None, name="c2", progress=lambda _: None)
    assert content(pool.volumes.active_path(c1), tmp_path) == expect["s1"]
    assert content(pool.volumes.active_path(c2), tmp_path) == expect["now"]
    assert c1.base == pool.volumes.get("v").base and len(c1.layers) == 1
    with pytest.raises(NotFound):
        await pool.clone_volume(source="v", snapshot="nope", name="c3", progress=lambda _: None)
    assert not pool.volumes.exists("c3") and leftovers(pool) == []


async def test_flatten_makes_the_volume_independent(pool: StoragePool, tmp_path: Path) -> None:
    expect = await snapshots_abc(pool, tmp_path)
    seen: list[float] = []
    flat = await pool.flatten_volume("v", progress=seen.append)
    assert flat.base is None and seen and seen[-1] == 100.0
    bottom = next(x for x in flat.layers if x.parent is None)
    assert backing_of(pool.volumes.layer_path(flat, bottom.id)) is None
    assert now(pool, tmp_path) == expect["now"]
    assert pool.images.cached() == []  # v was the only user of the cache entry
    await pool.volumes.revert("v", "s1")
    assert now(pool, tmp_path) == expect["s1"]
    with pytest.raises(FailedPrecondition) as e:
        await pool.flatten_volume("v", progress=lambda _: None)
    assert e.value.reason == "NOT_LINKED"


async def test_cancelled_flatten_leaves_a_working_linked_volume(pool: StoragePool, tmp_path: Path) -> None:
    src = make_image(tmp_path / "big.qcow2", 256 * MiB, length=192 * MiB)
    await pool.images.import_image(name="big", source=ImageSource(path=str(src)))
    vol = await pool.create_volume(name="v", size=None, image=pool.images.get("big"))
    expected = content(pool.volumes.active_path(vol), tmp_path)
    with trio.CancelScope() as scope:

        def cancel_on_progress(percent: float) -> None:
            if 0 < percent < 100:
                scope.cancel()

        await pool.flatten_volume("v", progress=cancel_on_progress)
    assert scope.cancelled_caught
    vol = pool.volumes.get("v")
    assert vol.base is not None and backing_of(pool.volumes.active_path(vol)) is not None
    assert content(pool.volumes.active_path(vol), tmp_path) == expected
    assert leftovers(pool) == [] and len(pool.images.cached()) == 1


async def test_an_attached_volume_is_flattened_by_its_holders_copy(pool: StoragePool, tmp_path: Path) -> None:
    src = make_image(tmp_path / "img.qcow2", 64 * MiB, length=8 * MiB)
    await pool.images.import_image(name="img", source=ImageSource(path=str(src)))
    vol = await pool.create_volume(name="v", size=None, image=pool.images.get("img"))
    await pool.volumes.attach("v", "vms/a")
    expected = content(pool.volumes.active_path(vol), tmp_path)
    copied: list[Path] = []

    async def copy(path: Path, progress: Callable[[float], None]) -> None:
        # What the VM's holder does (here offline, as for a stopped VM).
        copied.append(path)
        await QemuImg().rebase(path, None, progress=progress)

    # A copy that fails (or is cancelled) leaves the volume linked and readable.
    async def broken(path: Path, progress: Callable[[float], None]) -> None:
        raise FailedPrecondition("the block job failed", reason="TEST")

    with pytest.raises(FailedPrecondition):
        await pool.flatten_attached("v", broken, progress=lambda _: None)
    assert pool.volumes.get("v").base is not None and leftovers(pool) == []
    flat = await pool.flatten_attached("v", copy, progress=lambda _: None)
    assert copied == [pool.volumes.active_path(vol)]
    assert (flat.base, flat.attached_to) == (None, ("vms/a",))
    assert backing_of(pool.volumes.active_path(flat)) is None
    assert content(pool.volumes.active_path(flat), tmp_path) == expected
    assert pool.images.cached() == []
    with pytest.raises(FailedPrecondition) as e:
        await pool.flatten_attached("v", copy, progress=lambda _: None)
    assert e.value.reason == "NOT_LINKED"
    # With snapshots, the holder's pull would merge them: refused.
    await pool.volumes.detach("v", "vms/a")
    again = await pool.create_volume(name="w", size=None, image=pool.images.get("img"))
    await pool.volumes.snapshot("w", "s1")
    with pytest.raises(FailedPrecondition) as e:
        await pool.flatten_attached(again.name, copy, progress=lambda _: None)
    assert e.value.reason == "VOLUME_HAS_SNAPSHOTS"


async def test_attached_volumes_refuse_chain_changes(pool: StoragePool) -> None:
    await pool.create_volume(name="v", size=SIZE)
    await pool.volumes.snapshot("v", "s1")
    await pool.volumes.attach("v", "vms/a")
    for call in (
        pool.volumes.snapshot("v", "s2"),
        pool.volumes.revert("v", "s1"),
        pool.volumes.delete_snapshot("v", "s1"),
    ):
        with pytest.raises(FailedPrecondition) as e:
            await call
        assert e.value.reason == "VOLUME_ATTACHED"
    await pool.volumes.detach("v", "vms/a")
    await pool.volumes.delete_snapshot("v", "s1")


async def test_an_attached_volume_is_snapshotted_by_its_holder(pool: StoragePool, tmp_path: Path) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    write(pool.volumes.active_path(vol), 0x3C, 0, MiB)
    await pool.volumes.attach("v", "vms/a")
    switched: list[tuple[Path, Path]] = []

    async def switch(old: Path, new: Path) -> None:
        # What the VM's holder does: the record already names the new layer.
        assert pool.volumes.get("v").active != vol.active
        assert backing_of(new) is not None
        switched.append((old, new))

    snap = await pool.volumes.snapshot("v", "s1", switch=switch)
    record = pool.volumes.get("v")
    assert switched == [(pool.volumes.layer_path(record, snap.layer), pool.volumes.active_path(record))]
    assert (snap.layer, record.current_snapshot, record.attached_to) == (vol.active, "s1", ("vms/a",))
    assert content(pool.volumes.active_path(record), tmp_path) == content(
        pool.volumes.layer_path(record, snap.layer), tmp_path
    )

    # A holder that refuses (QEMU kept the old layer): the record and the files are as before.
    async def refuse(old: Path, new: Path) -> None:
        raise FailedPrecondition("QEMU refused the snapshot", reason="TEST")

    files = sorted(p.name for p in pool.volumes.active_path(record).parent.iterdir())
    with pytest.raises(FailedPrecondition):
        await pool.volumes.snapshot("v", "s2", switch=refuse)
    assert pool.volumes.get("v") == record
    assert sorted(p.name for p in pool.volumes.active_path(record).parent.iterdir()) == files
    assert leftovers(pool) == []


@pytest.fixture(params=["same-filesystem", "other-filesystem"])
def image_pool_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The image pool on the data pool's filesystem (the cache is a hard link) or on
    tmpfs (the cache must be a copy)."""
    if request.param == "same-filesystem":
        yield tmp_path / "images"
        return
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm tmpfs here")
    other = Path(tempfile.mkdtemp(prefix="zsd-test-images-", dir="/dev/shm"))
    try:
        yield other / "images"
    finally:
        shutil.rmtree(other)


async def test_an_image_from_another_pool_is_cached_once_in_the_data_pool(
    tmp_path: Path, image_pool_dir: Path
) -> None:
    images = await local_pool(image_pool_dir, name="images")
    data = await local_pool(tmp_path / "data", name="data")
    await imported(images, tmp_path)
    image = images.images.get("img")
    a = await data.create_volume(name="a", size=None, image=image, image_pool=images)
    b = await data.create_volume(name="b", size=None, image=image, image_pool=images)
    (cached,) = data.images.cached()
    assert cached.name == f"{image.sha256}.qcow2" and a.base == b.base
    linked = os.stat(cached).st_ino == os.stat(images.images.data_path(image)).st_ino
    assert linked == (os.stat(tmp_path).st_dev == os.stat(image_pool_dir).st_dev)
    # The cache is the data pool's own copy: the image store may lose the image.
    await images.images.delete("img")
    assert content(data.volumes.active_path(a), tmp_path)[:MiB] == b"\x5a" * MiB
    assert images.images.cached() == []  # nothing was cached in the image pool itself
    await data.delete_volume("a", force=False)
    await data.delete_volume("b", force=False)
    assert data.images.cached() == []


FAILING_QEMU_IMG = """#!/bin/sh
# qemu-img whose "commit" and "rebase" fail while the flag file exists.
if [ -e "$(dirname "$0")/fail" ] && { [ "$1" = commit ] || [ "$1" = rebase ]; }; then
    echo "qemu-img: injected failure" >&2
    exit 1
fi
exec /usr/bin/qemu-img "$@"
"""


@pytest.mark.parametrize("merge", ["commit", "pull"])
async def test_a_failed_merge_leaves_the_snapshot_deleting_and_a_retry_finishes(
    tmp_path: Path, merge: str
) -> None:
    tool = tmp_path / "bin" / "qemu-img"
    tool.parent.mkdir()
    tool.write_text(FAILING_QEMU_IMG)
    tool.chmod(0o755)
    pool = await local_pool(tmp_path / "pool", qemu=QemuImg(str(tool)))
    await pool.create_volume(name="v", size=SIZE)
    big, small = (8 * MiB, 4096) if merge == "commit" else (4096, 8 * MiB)
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x10, 0, big)
    await pool.volumes.snapshot("v", "s")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x20, MiB, small)
    vol = pool.volumes.get("v")
    snap = vol.snapshot("s")
    assert snap is not None and pool.volumes._delete_plan(vol, snap)[0] == merge
    before = now(pool, tmp_path)
    (tool.parent / "fail").touch()
    with pytest.raises(FailedPrecondition) as e:
        await pool.volumes.delete_snapshot("v", "s")
    assert "injected failure" in e.value.message
    after = pool.volumes.get("v").snapshot("s")
    assert after is not None and after.deleting and leftovers(pool) == []
    assert now(pool, tmp_path) == before  # the volume's content is intact
    for call in (
        pool.volumes.revert("v", "s"),
        pool.clone_volume(source="v", snapshot="s", name="c", progress=lambda _: None),
    ):
        with pytest.raises(FailedPrecondition) as e:
            await call
        assert e.value.reason == "SNAPSHOT_DELETING"
    (tool.parent / "fail").unlink()
    await pool.volumes.delete_snapshot("v", "s")
    assert pool.volumes.get("v").snapshots == () and now(pool, tmp_path) == before
