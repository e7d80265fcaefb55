"""Helpers for storage tests against the real qemu-img: make pools, write and read
guest-visible bytes of a chain."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from zsd.errors import Unavailable
from zsd.storage.images import Downloaded
from zsd.storage.model import PoolKind
from zsd.storage.pool import StoragePool
from zsd.storage.pools.base import PoolSpec
from zsd.storage.pools.local_dir import LocalDirPool
from zsd.storage.qemuimg import QemuImg

MiB = 1 << 20


def no_download(
    url: str,
    dest: Path,
    sha256: str | None,
    progress: Callable[[int, int | None], None],
    cancelled: Callable[[], bool],
) -> Downloaded:
    raise Unavailable(f"no downloads in this test ({url})")


async def local_pool(
    root: Path, *, max_overcommit: float = 20.0, name: str = "p", qemu: QemuImg | None = None
) -> StoragePool:
    spec = PoolSpec(
        name=name,
        uid=str(uuid.uuid4()),
        kind=PoolKind.LOCAL_DIR,
        path=str(root),
        host="h1",
        max_overcommit=max_overcommit,
    )
    driver = LocalDirPool(spec, host="h1")
    await driver.create()
    await driver.activate()
    return StoragePool(driver, qemu=qemu or QemuImg(), download=no_download)


def write(path: Path, pattern: int, offset: int, length: int, fmt: str = "qcow2") -> None:
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", str(path)],
        check=True,
        capture_output=True,
    )


def content(path: Path, tmp: Path) -> bytes:
    """The guest-visible bytes of the image at ``path`` (whole chain)."""
    raw = tmp / f"read-{uuid.uuid4().hex}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def make_image(path: Path, size: int, *, fmt: str = "qcow2", pattern: int = 0x5A, length: int = MiB) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    write(path, pattern, 0, length, fmt)
    return path


def backing_of(path: Path) -> str | None:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    value = json.loads(out).get("backing-filename")
    return str(value) if value is not None else None
