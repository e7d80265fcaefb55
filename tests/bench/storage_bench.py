"""Storage benchmark: zsd's volume operations next to the bare qemu-img commands they
are built on, in the same run, on the same filesystem.

    .venv/bin/python -m tests.bench.storage_bench [--repeats 30] [--clones 50] [--dir DIR]

Three tables:
1. Volume create latency, median and p90 over ``--repeats``: an empty 10 GiB volume
   (zsd: journal, qcow2, record) vs ``qemu-img create``; a linked clone of a cached
   1 GiB image (256 MiB of it written) vs ``qemu-img create -b``. The two sides run
   alternately, so drift of a shared machine hits both; the ratio is zsd / qemu-img.
2. ``--clones`` volumes from that one image: bytes on disk (the pool's image, its cache
   link and every volume layer, by st_blocks) vs that many full copies (one real
   ``qemu-img convert`` copy measured and multiplied).
3. Snapshot create, and snapshot delete with merge, on a 1 GiB volume with 256 MiB
   written: once with the data in the snapshot (merge by commit of the small top) and
   once with the data written after the snapshot (merge by pulling the small snapshot
   into the big top), next to the ``qemu-img`` step alone.

A benchmark, not a test: it prints numbers and exits 0; everything is made in a temp
directory that is removed on every way out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from tests.integration.storagekit import local_pool
from zsd.storage.images import ImageSource
from zsd.storage.pool import StoragePool

MiB = 1 << 20
GiB = 1 << 30


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def write(path: Path, offset: int, length: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x61 {offset} {length}", str(path)],
        check=True,
        capture_output=True,
    )


def on_disk(*paths: Path) -> int:
    total = 0
    seen: set[int] = set()
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            st = f.stat()
            if st.st_ino not in seen:  # the cache entry is a hard link to the image
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t = time.perf_counter()
    await fn()
    return (time.perf_counter() - t) * 1000


def stats(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


async def create_latency(pool: StoragePool, work: Path, repeats: int) -> list[str]:
    image = pool.images.get("img")
    base = pool.images.data_path(image)
    rows: dict[str, tuple[list[float], list[float]]] = {
        "empty 10 GiB": ([], []),
        "linked clone 1 GiB": ([], []),
    }
    for i in range(repeats):
        order = [0, 1] if i % 2 == 0 else [1, 0]
        for side in order:
            if side == 0:
                rows["empty 10 GiB"][0].append(
                    await timed(lambda i=i: pool.create_volume(name=f"e{i}", size=10 * GiB))  # type: ignore[misc]
                )
                rows["linked clone 1 GiB"][0].append(
                    await timed(lambda i=i: pool.create_volume(name=f"l{i}", size=None, image=image))  # type: ignore[misc]
                )
            else:
                t = time.perf_counter()
                qemu_img("create", "-q", "-f", "qcow2", str(work / f"e{i}.qcow2"), str(10 * GiB))
                rows["empty 10 GiB"][1].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                qemu_img(
                    "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(work / f"l{i}.qcow2")
                )
                rows["linked clone 1 GiB"][1].append((time.perf_counter() - t) * 1000)
    for i in range(repeats):
        await pool.delete_volume(f"e{i}", force=False)
        await pool.delete_volume(f"l{i}", force=False)
    out = [
        f"Volume create latency ({repeats} each, alternating; ms)",
        f"{'volume':<20} {'zsd p50':>9} {'zsd p90':>9} {'qemu-img p50':>13} {'qemu-img p90':>13}"
        f" {'ratio p50':>10}",
    ]
    for label, (zsd, raw) in rows.items():
        zp50, zp90 = stats(zsd)
        qp50, qp90 = stats(raw)
        out.append(f"{label:<20} {zp50:>9.2f} {zp90:>9.2f} {qp50:>13.2f} {qp90:>13.2f} {zp50 / qp50:>9.2f}x")
    return out


async def clone_footprint(pool: StoragePool, work: Path, clones: int) -> list[str]:
    image = pool.images.get("img")
    before = on_disk(pool.files.images, pool.files.cache, pool.files.volumes)
    t = time.perf_counter()
    for i in range(clones):
        await pool.create_volume(name=f"c{i}", size=None, image=image)
    took = time.perf_counter() - t
    linked = on_disk(pool.files.images, pool.files.cache, pool.files.volumes)
    copy = work / "full-copy.qcow2"
    qemu_img("convert", "-f", image.format, "-O", "qcow2", str(pool.images.data_path(image)), str(copy))
    one = on_disk(copy)
    image_bytes = on_disk(pool.images.data_path(image))
    for i in range(clones):
        await pool.delete_volume(f"c{i}", force=False)
    return [
        f"{clones} volumes from one 1 GiB image (256 MiB written), bytes on disk",
        f"{'layout':<34} {'bytes':>14} {'MiB':>10}",
        f"{'zsd: image + cache + linked vols':<34} {linked:>14} {linked / MiB:>10.1f}",
        f"{'  of which the image (stored once)':<34} {image_bytes:>14} {image_bytes / MiB:>10.1f}",
        f"{f'{clones} full copies (qemu-img convert)':<34} {one * clones:>14} {one * clones / MiB:>10.1f}",
        f"ratio full copies / zsd: {one * clones / linked:.1f}x; "
        f"(pool held {before / MiB:.1f} MiB before; {clones} linked creates took {took * 1000:.0f} ms)",
    ]


async def snapshot_times(pool: StoragePool, work: Path, repeats: int) -> list[str]:
    rows = []
    for case in ("data in snapshot", "data after snapshot"):
        create_ms, delete_ms, raw_ms = [], [], []
        for i in range(repeats):
            name = f"s{i}"
            vol = await pool.create_volume(name=name, size=GiB)
            if case == "data in snapshot":
                write(pool.volumes.active_path(vol), 0, 256 * MiB)
            create_ms.append(await timed(lambda name=name: pool.volumes.snapshot(name, "snap")))  # type: ignore[misc]
            if case == "data after snapshot":
                write(pool.volumes.active_path(pool.volumes.get(name)), 0, 256 * MiB)
            delete_ms.append(await timed(lambda name=name: pool.volumes.delete_snapshot(name, "snap")))  # type: ignore[misc]
            await pool.delete_volume(name, force=False)
            # The bare qemu-img step the merge is made of, on the same shapes.
            low, top = work / f"low{i}.qcow2", work / f"top{i}.qcow2"
            qemu_img("create", "-q", "-f", "qcow2", str(low), str(GiB))
            if case == "data in snapshot":
                write(low, 0, 256 * MiB)
            qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(low), str(top))
            t = time.perf_counter()
            if case == "data in snapshot":
                qemu_img("commit", "-q", "-d", str(top))
            else:
                write(top, 0, 256 * MiB)
                t = time.perf_counter()
                qemu_img("rebase", "-q", "-f", "qcow2", "-b", "", str(top))
            raw_ms.append((time.perf_counter() - t) * 1000)
            low.unlink()
            top.unlink()
        c50, _ = stats(create_ms)
        d50, _ = stats(delete_ms)
        r50, _ = stats(raw_ms)
        rows.append(f"{case:<22} {c50:>12.2f} {d50:>14.2f} {r50:>16.2f} {d50 / r50:>8.2f}x")
    return [
        f"Snapshot on a 1 GiB volume with 256 MiB written ({repeats} each; medians, ms)",
        f"{'case':<22} {'create':>12} {'delete+merge':>14} {'qemu-img merge':>16} {'ratio':>9}",
        *rows,
    ]


async def main_async(ns: argparse.Namespace, root: Path) -> list[str]:
    pool = await local_pool(root / "pool")
    src = root / "image.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(src), str(GiB))
    write(src, 0, 256 * MiB)
    await pool.images.import_image(name="img", source=ImageSource(path=str(src)))
    work = root / "raw"
    work.mkdir()
    out = await create_latency(pool, work, ns.repeats)
    out += [""] + await clone_footprint(pool, work, ns.clones)
    out += [""] + await snapshot_times(pool, work, ns.snapshot_repeats)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--clones", type=int, default=50)
    parser.add_argument("--snapshot-repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zsd-storage-bench-", dir=ns.dir) as tmp:
        try:
            print("\n".join(trio.run(main_async, ns, Path(tmp))))
        except KeyboardInterrupt:
            print("interrupted; the temp dir was removed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
