"""Helpers for compute tests: guest disks as overlays of the test image, specs, and
waiting for the guest's console markers."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import trio

from zsd.compute.runtime import LocalVms
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec

MARK = b"ZSD-GUEST: "


def overlay(base: Path, dest: Path) -> Path:
    """A thin qcow2 on top of the guest image: each VM writes only its own file."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(dest)], check=True
    )
    return dest


def blank(dest: Path, size: str = "16M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(dest), size], check=True)
    return dest


def spec(name: str, disk: Path, *, nics: tuple[NicSpec, ...] = (), memory_mib: int = 128) -> VmSpec:
    return VmSpec(
        name=name,
        uid=str(uuid.uuid4()),
        vcpus=1,
        memory_mib=memory_mib,
        disks=(DiskSpec(path=str(disk), volume=f"test/{name}", boot_order=1),),
        nics=nics,
        graphics="vnc",
    )


class Console:
    """Reads a VM's console log from the start and finds markers in order."""

    def __init__(self, vms: LocalVms, name: str) -> None:
        self._vms = vms
        self._name = name
        self.text = b""
        self._pos = 0

    async def expect_all(self, *markers: str, timeout: float = 90.0) -> None:
        """Waits for every marker after the last one found, in any order (the guest
        prints some from concurrent jobs)."""
        start = self._pos
        ends = []
        for marker in markers:
            self._pos = start
            await self.expect(marker, timeout=timeout)
            ends.append(self._pos)
        self._pos = max(ends, default=start)

    async def expect(self, marker: str, *, timeout: float = 90.0) -> str:
        """Waits for the next line containing ``ZSD-GUEST: <marker>`` after the last
        one found; returns that line."""
        needle = MARK + marker.encode()
        with trio.fail_after(timeout):
            while True:
                index = self.text.find(needle, self._pos)
                if index >= 0:
                    end = self.text.find(b"\n", index)
                    if end >= 0:
                        self._pos = end
                        return self.text[index:end].decode(errors="replace").strip()
                self.text = b"".join([chunk async for chunk in self._vms.console(self._name, follow=False)])
                if self.text.find(needle, self._pos) < 0:
                    await trio.sleep(0.2)
        raise AssertionError("unreachable")  # pragma: no cover
