"""Crash safety: each multi-step operation is interrupted at its worst point (by
recreating the on-disk state a crash would leave) and ``recover`` must finish or
undo it without losing data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.integration.storagekit import MiB, content, local_pool, write
from zsd.storage.pool import StoragePool

SIZE = 16 * MiB


@pytest.fixture
async def pool(tmp_path: Path) -> StoragePool:
    return await local_pool(tmp_path / "pool")


def journal_empty(pool: StoragePool) -> bool:
    return list(pool.files.journal.iterdir()) == []


async def test_create_without_record_is_rolled_back(pool: StoragePool) -> None:
    pool.volumes._journal.begin("create", "v", uid="dead")
    layer = pool.files.layer("dead", "l1")
    layer.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(layer), "1M"], check=True)
    assert await pool.recover() == ["create v: rolled back"]
    assert not layer.parent.exists() and journal_empty(pool)


async def test_create_with_record_is_kept(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    pool.volumes._journal.begin("create", "v", uid=vol.uid)
    assert await pool.recover() == ["create v: completed"]
    assert pool.volumes.active_path(pool.volumes.get("v")).exists()


async def test_delete_after_its_commit_point_is_finished(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    pool.volumes._journal.begin("delete", "v", uid=vol.uid)
    os.replace(pool.files.volume_record("v"), pool.files.volumes / f".deleted-{vol.uid}.json")
    assert await pool.recover() == ["delete v: completed"]
    assert not pool.files.volume_dir(vol.uid).exists() and pool.volumes.records() == []


async def test_delete_before_its_commit_point_keeps_the_volume(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    pool.volumes._journal.begin("delete", "v", uid=vol.uid)
    assert await pool.recover() == ["delete v: rolled back (record still present)"]
    assert pool.volumes.active_path(pool.volumes.get("v")).exists()


async def test_snapshot_layer_without_record_is_removed(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    pool.volumes._journal.begin("snapshot", "v", uid=vol.uid, layer="orphan")
    orphan = pool.files.layer(vol.uid, "orphan")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(orphan), "1M"], check=True)
    assert await pool.recover() == ["snapshot v: rolled back"]
    assert not orphan.exists() and pool.volumes.active_path(pool.volumes.get("v")).exists()


async def test_resize_between_image_and_record(pool: StoragePool) -> None:
    vol = await pool.create_volume(name="v", size=SIZE)
    pool.volumes._journal.begin("resize", "v", uid=vol.uid)
    subprocess.run(
        ["qemu-img", "resize", "-q", str(pool.volumes.active_path(vol)), str(2 * SIZE)], check=True
    )
    assert await pool.recover() == [f"resize v: size is {2 * SIZE}"]
    assert pool.volumes.get("v").virtual_size == 2 * SIZE


@pytest.mark.parametrize("stage", ["committed", "renamed"])
async def test_snapshot_merge_by_commit_is_rolled_forward(
    pool: StoragePool, tmp_path: Path, stage: str
) -> None:
    await pool.create_volume(name="v", size=SIZE)
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x10, 0, 8 * MiB)
    await pool.volumes.snapshot("v", "s")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x20, 0, 4096)
    vol = pool.volumes.get("v")
    expected = content(pool.volumes.active_path(vol), tmp_path)
    snap = vol.snapshot("s")
    assert snap is not None
    plan, children = pool.volumes._delete_plan(vol, snap)
    assert plan == "commit"
    pool.volumes._journal.begin(
        "delete-snapshot", "v", uid=vol.uid, snapshot="s", plan=plan, children=children
    )
    # The crash: qemu-img commit ran (and maybe the rename), the record was not updated.
    frozen, child = pool.volumes.layer_path(vol, snap.layer), pool.volumes.layer_path(vol, children[0])
    subprocess.run(["qemu-img", "commit", "-q", "-d", str(child)], check=True)
    if stage == "renamed":
        os.replace(frozen, child)
    assert await pool.recover() == ["delete-snapshot v: completed"]
    after = pool.volumes.get("v")
    assert after.snapshots == () and len(after.layers) == 1
    assert content(pool.volumes.active_path(after), tmp_path) == expected
    assert sorted(p.name for p in pool.files.volume_dir(vol.uid).iterdir()) == [f"{after.active}.qcow2"]


async def test_snapshot_merge_by_pull_is_rolled_forward(pool: StoragePool, tmp_path: Path) -> None:
    await pool.create_volume(name="v", size=SIZE)
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x10, 0, 4096)
    await pool.volumes.snapshot("v", "s")
    write(pool.volumes.active_path(pool.volumes.get("v")), 0x20, MiB, 8 * MiB)
    vol = pool.volumes.get("v")
    expected = content(pool.volumes.active_path(vol), tmp_path)
    snap = vol.snapshot("s")
    assert snap is not None
    plan, children = pool.volumes._delete_plan(vol, snap)
    assert plan == "pull"
    pool.volumes._journal.begin(
        "delete-snapshot", "v", uid=vol.uid, snapshot="s", plan=plan, children=children
    )
    # The crash: the child was rebased, the record still lists the snapshot.
    subprocess.run(
        ["qemu-img", "rebase", "-q", "-b", "", str(pool.volumes.layer_path(vol, children[0]))], check=True
    )
    assert await pool.recover() == ["delete-snapshot v: completed"]
    after = pool.volumes.get("v")
    assert after.snapshots == () and content(pool.volumes.active_path(after), tmp_path) == expected
    assert not pool.volumes.layer_path(vol, snap.layer).exists()


async def test_a_torn_journal_entry_means_nothing_started(pool: StoragePool) -> None:
    (pool.files.journal / "x.json").write_bytes(b'{"id": "x", "verb"')
    assert await pool.recover() == []
    assert journal_empty(pool)


HOLDER = """
import fcntl, json, os, sys
pool, uid = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(pool, ".zsd/locks/volume-v.lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.makedirs(os.path.join(pool, "volumes", uid))
entry = os.path.join(pool, ".zsd/journal/j1.json")
with open(entry, "w") as f:
    json.dump({"id": "j1", "verb": "create", "subject": "v", "data": {"uid": uid}}, f)
print("ready", flush=True)
sys.stdin.readline()
os.unlink(entry)  # the operation ends its own entry, then lets go of the lock
"""


async def test_recovery_waits_for_an_operation_another_host_is_running(pool: StoragePool) -> None:
    """On a shared pool another host's zsd may be mid-operation when this one
    recovers: the volume's lock (fcntl, held across processes) makes recovery wait,
    and an entry its operation ended meanwhile is left alone."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pool.files.root), "inflight"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        result: list[list[str]] = []
        async with trio.open_nursery() as nursery:

            async def recover() -> None:
                result.append(await pool.recover())

            nursery.start_soon(recover)
            await trio.sleep(0.3)
            assert result == [] and pool.files.volume_dir("inflight").exists()  # waiting, not undoing
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
        assert result == [[]]  # the entry was gone when recovery got the lock
        assert pool.files.volume_dir("inflight").exists()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()
