"""Image imports from local files with the real qemu-img: the content decides the
format, bad images are refused, and a failed import leaves nothing behind."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.integration.storagekit import MiB, content, local_pool, make_image
from zsd.errors import AlreadyExists, InvalidArgument
from zsd.storage.images import ImageSource
from zsd.storage.pool import StoragePool

SIZE = 8 * MiB


@pytest.fixture
async def pool(tmp_path: Path) -> StoragePool:
    return await local_pool(tmp_path / "pool")


def nothing_left(pool: StoragePool) -> bool:
    return (
        list(pool.files.tmp.iterdir()) == []
        and list(pool.files.journal.iterdir()) == []
        and list(pool.files.images.iterdir()) == []
    )


async def test_qcow2_and_raw_are_detected_by_content(pool: StoragePool, tmp_path: Path) -> None:
    q = make_image(tmp_path / "disk.raw", SIZE)  # qcow2 content despite the name
    r = make_image(tmp_path / "disk.qcow2", SIZE, fmt="raw")  # raw content despite the name
    progress: list[tuple[int, str]] = []
    qi = await pool.images.import_image(
        name="q", source=ImageSource(path=str(q)), progress=lambda p, m: progress.append((p, m))
    )
    ri = await pool.images.import_image(name="r", source=ImageSource(path=str(r)))
    assert (qi.format, qi.virtual_size) == ("qcow2", SIZE)
    assert (ri.format, ri.virtual_size, ri.size) == ("raw", SIZE, SIZE)
    assert qi.sha256 == hashlib.sha256(q.read_bytes()).hexdigest()
    assert progress[-1] == (100, "imported") and all(-1 <= p <= 100 for p, _ in progress)
    assert sorted(i.name for i in pool.images.records()) == ["q", "r"]
    assert content(pool.images.data_path(qi), tmp_path) == content(q, tmp_path)
    with pytest.raises(AlreadyExists):
        await pool.images.import_image(name="q", source=ImageSource(path=str(q)))
    # A raw image is a fine base for linked clones too.
    vol = await pool.create_volume(name="v", size=None, image=ri)
    assert content(pool.volumes.active_path(vol), tmp_path)[:MiB] == b"\x5a" * MiB


@pytest.mark.parametrize(
    ("claimed", "fmt", "reason"), [("qcow2", "raw", "FORMAT_MISMATCH"), ("raw", "qcow2", "FORMAT_MISMATCH")]
)
async def test_an_image_that_is_not_what_it_claims(
    pool: StoragePool, tmp_path: Path, claimed: str, fmt: str, reason: str
) -> None:
    src = make_image(tmp_path / "x.img", SIZE, fmt=fmt)
    with pytest.raises(InvalidArgument) as e:
        await pool.images.import_image(name="x", source=ImageSource(path=str(src)), format=claimed)
    assert (e.value.field, e.value.reason) == ("image.format", reason)
    assert nothing_left(pool)


async def test_backing_files_are_refused(pool: StoragePool, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", SIZE)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)], check=True
    )
    with pytest.raises(InvalidArgument) as e:
        await pool.images.import_image(name="o", source=ImageSource(path=str(overlay)))
    assert e.value.reason == "BACKING_FILE" and str(base) in e.value.message
    assert nothing_left(pool)


async def test_external_data_files_are_refused(pool: StoragePool, tmp_path: Path) -> None:
    img = tmp_path / "ext.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            f"data_file={tmp_path / 'ext.data'}",
            str(img),
            "1M",
        ],
        check=True,
    )
    with pytest.raises(InvalidArgument) as e:
        await pool.images.import_image(name="e", source=ImageSource(path=str(img)))
    assert e.value.reason == "EXTERNAL_DATA_FILE"
    assert nothing_left(pool)


async def test_checksum_mismatch_and_bad_paths(pool: StoragePool, tmp_path: Path) -> None:
    src = make_image(tmp_path / "a.qcow2", SIZE)
    with pytest.raises(InvalidArgument) as e:
        await pool.images.import_image(name="a", source=ImageSource(path=str(src), sha256="0" * 64))
    assert (e.value.field, e.value.reason) == ("source.sha256", "CHECKSUM_MISMATCH")
    for bad in (str(tmp_path / "missing"), str(tmp_path), "relative/path"):
        with pytest.raises(InvalidArgument) as e:
            await pool.images.import_image(name="a", source=ImageSource(path=bad))
        assert e.value.field == "source.path"
    with pytest.raises(InvalidArgument) as e:
        await pool.images.import_image(name="a", source=ImageSource(path=str(src)), format="vmdk")
    assert e.value.field == "image.format"
    assert nothing_left(pool)
    ok = await pool.images.import_image(
        name="a", source=ImageSource(path=str(src), sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    )
    assert ok.name == "a"


async def test_an_interrupted_import_is_rolled_back(pool: StoragePool, tmp_path: Path) -> None:
    # As if zsd died mid-import: a journal entry and a partial file, no record.
    entry = pool.volumes._journal.begin("import", "half", uid="u1")
    (pool.files.tmp / "u1.part").write_bytes(b"partial")
    assert entry.id
    assert await pool.recover() == ["import half: rolled back"]
    assert nothing_left(pool)
