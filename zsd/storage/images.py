"""The image store of a file-based pool, and its image cache.

An import lands in ``.zsd/tmp`` first; only when its content is checked (the
format qemu-img finds, no backing or external data file, the sha256 asked for)
is it renamed into ``images/`` and its record written — the commit point. A
failed or interrupted import leaves nothing behind.

Linked volumes never use an image's file directly: they use ``cache/<sha256>``,
a hard link to it (a copy when the image lives elsewhere). So an image is stored
once however many volumes use it, deleting the image does not break them, and
the cache entry goes when its last volume does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from zsd.errors import AlreadyExists, Cancelled, InvalidArgument, NotFound
from zsd.storage.journal import Entry, Journal
from zsd.storage.locks import FileLocks
from zsd.storage.model import BaseImage, ImageRecord, decode_image, encode
from zsd.storage.pools.files import PoolFiles
from zsd.storage.qemuimg import FORMATS, QemuImg
from zsd.util.fsutil import write_atomic

CHUNK = 1 << 20

ImportProgress = Callable[[int, str], None]
"""(percent or -1, message)."""


@dataclass(frozen=True, kw_only=True)
class ImageSource:
    path: str = ""
    """An absolute path on the host running the import."""
    url: str = ""
    sha256: str = ""
    """Required to match when given (hex)."""


@dataclass(frozen=True, kw_only=True)
class Downloaded:
    size: int
    sha256: str


class Downloader(Protocol):
    """Streams ``url`` into ``dest`` (blocking; run in a thread), verifying ``sha256``
    when given and resuming after broken connections; raises zsd errors."""

    def __call__(
        self,
        url: str,
        dest: Path,
        sha256: str | None,
        progress: Callable[[int, int | None], None],
        cancelled: Callable[[], bool],
    ) -> Downloaded: ...


class ImageStore:
    def __init__(
        self,
        files: PoolFiles,
        *,
        qemu: QemuImg,
        locks: FileLocks,
        journal: Journal,
        download: Downloader,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._files = files
        self._qemu = qemu
        self._locks = locks
        self._journal = journal
        self._download = download
        self._clock = clock
        self._new_id = new_id

    def records(self) -> list[ImageRecord]:
        out = []
        for path in sorted(self._files.images.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                out.append(decode_image(path.read_bytes()))
        return out

    def get(self, name: str) -> ImageRecord:
        try:
            return decode_image(self._files.image_record(name).read_bytes())
        except FileNotFoundError:
            raise NotFound(f"image {name!r} does not exist in this pool", field="name") from None

    def data_path(self, image: ImageRecord) -> Path:
        return self._files.images / image.data_name

    async def import_image(
        self,
        *,
        name: str,
        source: ImageSource,
        format: str | None = None,
        description: str = "",
        progress: ImportProgress = lambda _p, _m: None,
    ) -> ImageRecord:
        if format is not None and format not in FORMATS:
            raise InvalidArgument(
                f"format must be one of {', '.join(FORMATS)}, got {format!r}", field="image.format"
            )
        async with self._locks.hold(f"image-{name}"):
            if self._files.image_record(name).exists():
                raise AlreadyExists(f"image {name!r} already exists in this pool", field="image_id")
            uid = self._new_id()
            tmp = self._files.tmp / f"{uid}.part"
            entry = self._journal.begin("import", name, uid=uid)
            try:
                got = await self._receive(source, tmp, progress)
                progress(95, "checking the image")
                info = await self._qemu.info(tmp)
                _check_content(info.format, format, info.backing_file, info.data_file, info.encrypted)
                record = ImageRecord(
                    name=name,
                    uid=uid,
                    format=info.format,
                    virtual_size=info.virtual_size,
                    size=got.size,
                    sha256=got.sha256,
                    source=source.url or source.path,
                    create_time=self._clock(),
                    description=description,
                )
                data = self.data_path(record)
                os.chmod(tmp, 0o444)
                os.replace(tmp, data)
                write_atomic(self._files.image_record(name), encode(record), mode=0o644)
            except BaseException:
                # Nothing was committed: the record is the commit point.
                tmp.unlink(missing_ok=True)
                if not self._files.image_record(name).exists():
                    (self._files.images / f"{uid}.qcow2").unlink(missing_ok=True)
                    (self._files.images / f"{uid}.raw").unlink(missing_ok=True)
                raise
            finally:
                self._journal.end(entry)
            progress(100, "imported")
            return record

    async def _receive(self, source: ImageSource, tmp: Path, progress: ImportProgress) -> Downloaded:
        expected = source.sha256.lower() or None
        stop = False

        def cancelled() -> bool:
            return stop

        def report(done: int, total: int | None) -> None:
            percent = int(done * 90 / total) if total else -1
            trio.from_thread.run_sync(progress, percent, f"{done} bytes received")

        # On cancellation the thread is abandoned and told to stop at its next chunk.
        try:
            if source.url:
                return await trio.to_thread.run_sync(
                    self._download, source.url, tmp, expected, report, cancelled, abandon_on_cancel=True
                )
            return await trio.to_thread.run_sync(
                _copy, Path(source.path), tmp, expected, report, cancelled, abandon_on_cancel=True
            )
        finally:
            stop = True

    async def delete(self, name: str) -> ImageRecord:
        """Linked volumes keep working: they use the image cache's link to the data."""
        async with self._locks.hold(f"image-{name}"):
            record = self.get(name)
            self._files.image_record(name).unlink()
            self.data_path(record).unlink(missing_ok=True)
            return record

    # -- the cache -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def cache_lock(self, sha256: str) -> AsyncIterator[None]:
        async with self._locks.hold(f"cache-{sha256}"):
            yield

    def cache(self, image: ImageRecord, data: Path) -> BaseImage:
        """Puts ``data`` (``image``'s file, in this pool or another) in the cache
        unless it is there. The caller holds ``cache_lock(image.sha256)``."""
        base = BaseImage(sha256=image.sha256, format=image.format, image=image.name)
        target = self._files.cache / base.cache_name
        if target.exists():
            return base
        tmp = self._files.tmp / f"cache-{image.sha256}.part"
        tmp.unlink(missing_ok=True)
        try:
            os.link(data, tmp)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copyfile(data, tmp)
            os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        return base

    def release(self, base: BaseImage, in_use: Callable[[str], bool]) -> bool:
        """Removes the cache entry when no volume uses it (``in_use(sha256)``); the
        caller holds ``cache_lock(base.sha256)``."""
        if in_use(base.sha256):
            return False
        (self._files.cache / base.cache_name).unlink(missing_ok=True)
        return True

    def cached(self) -> list[Path]:
        return sorted(self._files.cache.iterdir())

    async def recover(self) -> list[str]:
        done = []
        for entry in self._journal.pending():
            if entry.verb != "import":
                continue
            async with self._locks.hold(f"image-{entry.subject}"):
                if self._journal.open(entry):
                    done.append(self._recover_import(entry))
        return done

    def _recover_import(self, entry: Entry) -> str:
        uid = str(entry.data["uid"])
        (self._files.tmp / f"{uid}.part").unlink(missing_ok=True)
        try:
            committed = self.get(entry.subject).uid == uid
        except NotFound:
            committed = False
        if not committed:
            for fmt in FORMATS:
                (self._files.images / f"{uid}.{fmt}").unlink(missing_ok=True)
        self._journal.end(entry)
        return f"import {entry.subject}: {'completed' if committed else 'rolled back'}"


def _check_content(
    found: str, claimed: str | None, backing: str | None, data_file: str | None, encrypted: bool
) -> None:
    if found not in FORMATS:
        raise InvalidArgument(
            f"the file is a {found!r} image; only {', '.join(FORMATS)} can be imported",
            field="image.format",
            reason="BAD_IMAGE",
        )
    if claimed is not None and claimed != found:
        raise InvalidArgument(
            f"the file is a {found} image, not {claimed} (its content decides, not its name)",
            field="image.format",
            reason="FORMAT_MISMATCH",
        )
    if backing is not None:
        raise InvalidArgument(
            f"the image has a backing file ({backing!r}); import a self-contained image "
            "(qemu-img convert flattens one)",
            field="source",
            reason="BACKING_FILE",
        )
    if data_file is not None:
        raise InvalidArgument(
            f"the image keeps its data in an external file ({data_file!r}); only self-contained "
            "images can be imported",
            field="source",
            reason="EXTERNAL_DATA_FILE",
        )
    if encrypted:
        raise InvalidArgument("encrypted images are not supported", field="source", reason="ENCRYPTED")


def _copy(
    source: Path,
    dest: Path,
    sha256: str | None,
    progress: Callable[[int, int | None], None],
    cancelled: Callable[[], bool],
) -> Downloaded:
    if not source.is_absolute() or not source.is_file():
        raise InvalidArgument(
            f"{str(source)!r} is not an absolute path to a regular file on this host",
            field="source.path",
            reason="BAD_SOURCE",
        )
    digest = hashlib.sha256()
    total = source.stat().st_size
    done = 0
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            if cancelled():
                raise Cancelled("the import was cancelled")
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if done % (64 * CHUNK) < CHUNK:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    progress(done, total)
    got = digest.hexdigest()
    if sha256 is not None and got != sha256:
        raise InvalidArgument(
            f"sha256 of {source} is {got}, not {sha256}", field="source.sha256", reason="CHECKSUM_MISMATCH"
        )
    return Downloaded(size=done, sha256=got)
