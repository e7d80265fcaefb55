"""The one place qemu-img runs: image facts and every data-moving step of volumes.

Everything goes through ``QemuImg`` with an injected binary path, so tests can
point at the real qemu-img and a benchmark can compare with it. Commands run
under trio: cancelling the caller's scope kills qemu-img (SIGKILL, then it is
reaped), which is safe for every command used here because each either writes
a new file (convert, create) that the caller discards, or changes an image only
in ways that keep its guest-visible content (rebase in safe mode, commit into a
layer being deleted), with the header written last.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from zsd.errors import FailedPrecondition, InvalidArgument, Unavailable

FORMATS = ("qcow2", "raw")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

ProgressFn = Callable[[float], None]
"""Called with 0..100 as qemu-img reports progress."""


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What qemu-img found in a file (the content decides, never the file name)."""

    path: Path
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    backing_format: str | None
    cluster_size: int | None
    dirty: bool
    encrypted: bool
    data_file: str | None
    """qcow2 with an external data file (refused for imports: it reads another file)."""


class QemuImg:
    def __init__(self, binary: str = "/usr/bin/qemu-img") -> None:
        self._binary = binary

    async def info(self, path: Path, *, fmt: str | None = None) -> ImageInfo:
        # -U: reading facts must not need (or take) the image lock a running VM holds.
        argv = ["info", "--output=json", "-U"]
        if fmt is not None:
            argv += ["-f", fmt]
        out = await self._run([*argv, str(path)])
        try:
            data = json.loads(out)
        except json.JSONDecodeError as e:
            raise FailedPrecondition(f"qemu-img info on {path} printed no JSON", reason="QEMU_IMG") from e
        return ImageInfo(
            path=path,
            format=str(data["format"]),
            virtual_size=int(data["virtual-size"]),
            actual_size=int(data.get("actual-size", 0)),
            backing_file=data.get("backing-filename"),
            backing_format=data.get("backing-filename-format"),
            cluster_size=data.get("cluster-size"),
            dirty=bool(data.get("dirty-flag", False)),
            encrypted=bool(data.get("encrypted", False)),
            data_file=data.get("format-specific", {}).get("data", {}).get("data-file"),
        )

    async def create(
        self, path: Path, *, size: int, backing: Path | None = None, backing_format: str | None = None
    ) -> None:
        """A new qcow2 file; with ``backing`` a thin overlay on it. ``backing`` is
        written relative to ``path``'s directory when it lies below it, so a pool
        stays valid wherever each host mounts it."""
        argv = ["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=off"]
        if backing is not None:
            argv += ["-b", _backing_ref(path, backing), "-F", backing_format or "qcow2"]
        await self._run([*argv, str(path), str(size)])

    async def resize(self, path: Path, size: int) -> None:
        await self._run(["resize", "-q", "-f", "qcow2", str(path), str(size)])

    async def convert(
        self,
        source: Path,
        dest: Path,
        *,
        source_format: str,
        dest_format: str = "qcow2",
        progress: ProgressFn | None = None,
    ) -> None:
        """Copies the guest-visible content of ``source`` (with its whole chain) into
        a new, self-contained ``dest``."""
        argv = ["convert", "-p", "-f", source_format, "-O", dest_format]
        await self._run([*argv, str(source), str(dest)], progress=progress)

    async def rebase(
        self,
        path: Path,
        backing: Path | None,
        *,
        backing_format: str = "qcow2",
        progress: ProgressFn | None = None,
    ) -> None:
        """Safe rebase: copies into ``path`` whatever differs between its old and its
        new backing chain (all of it when ``backing`` is None), then switches the
        header. The guest-visible content never changes, so stopping midway is safe."""
        ref = "" if backing is None else _backing_ref(path, backing)
        argv = ["rebase", "-p", "-f", "qcow2", "-b", ref]
        if backing is not None:
            argv += ["-F", backing_format]
        await self._run([*argv, str(path)], progress=progress)

    async def rebase_unsafe(self, path: Path, backing: Path, *, backing_format: str = "qcow2") -> None:
        """Only rewrites the backing reference (the new backing must hold the same data)."""
        ref = _backing_ref(path, backing)
        await self._run(["rebase", "-u", "-f", "qcow2", "-b", ref, "-F", backing_format, str(path)])

    async def commit(self, path: Path, *, progress: ProgressFn | None = None) -> None:
        """Writes ``path``'s data into its backing file; ``path`` is left as it was (-d)."""
        await self._run(["commit", "-p", "-d", "-f", "qcow2", str(path)], progress=progress)

    async def _run(self, args: Sequence[str], *, progress: ProgressFn | None = None) -> bytes:
        argv = [self._binary, *args]
        stdout = bytearray()
        stderr = bytearray()

        async def pump(stream: trio.abc.ReceiveStream, into: bytearray, report: bool) -> None:
            async for chunk in stream:
                into.extend(chunk)
                found = _PROGRESS.findall(bytes(chunk)) if report and progress is not None else None
                if found and progress is not None:
                    progress(float(found[-1]))

        try:
            async with trio.open_nursery() as nursery:
                proc: trio.Process = await nursery.start(
                    lambda task_status: trio.run_process(
                        argv,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        check=False,
                        task_status=task_status,
                    )
                )
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(pump, proc.stdout, stdout, True)
                nursery.start_soon(pump, proc.stderr, stderr, False)
        except FileNotFoundError as e:
            raise Unavailable(
                f"{self._binary} is not installed (package qemu-utils)", reason="NO_QEMU_IMG"
            ) from e
        if proc.returncode != 0:
            raise _error(args[0], proc.returncode or -1, bytes(stderr))
        return bytes(stdout)


def _backing_ref(image: Path, backing: Path) -> str:
    try:
        return str(backing.relative_to(image.parent))
    except ValueError:
        pass
    # Layers of one volume refer to each other (and to the pool's image cache)
    # through "../": still relative, so the pool may be mounted anywhere.
    here, there = image.parent.parts, backing.parent.parts
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return str(Path(*([".."] * (len(here) - common)), *there[common:], backing.name))


def _error(command: str, returncode: int, stderr: bytes) -> FailedPrecondition | InvalidArgument:
    text = stderr.decode(errors="replace").strip().splitlines()
    detail = text[-1] if text else f"exit status {returncode}"
    detail = detail.removeprefix("qemu-img: ")
    message = f"qemu-img {command} failed: {detail}"
    if "Image is not in" in detail or ("Could not open" in detail and "format" in detail):
        return InvalidArgument(message, reason="BAD_IMAGE")
    return FailedPrecondition(message, reason="QEMU_IMG")
