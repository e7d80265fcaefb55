"""LVM through its commands, for shared-block pools: argv built by pure functions,
reports read as JSON, failures translated into zsd errors.

``devices`` restricts every command to the pool's own LUNs (``--devices``, LVM
2.03.12+), so zsd never scans or touches other disks of the host; ``use_lvmlockd``
is passed per command for shared VGs rather than relying on the host's lvm.conf.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
_VG_FIELDS = ("vg_name", "vg_size", "vg_free", "vg_extent_size", "vg_lock_type", "pv_count", "lv_count")


@dataclass(frozen=True, kw_only=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str]) -> Completed:
    # LVM warns about every inherited fd; those warnings are not errors.
    env = {**os.environ, "LC_ALL": "C", "LVM_SUPPRESS_FD_WARNINGS": "1"}
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False, timeout=120)
    except FileNotFoundError as e:
        raise Unavailable(f"{argv[0]} is not installed (package lvm2)", reason="NO_LVM") from e
    return Completed(argv=tuple(argv), returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


@dataclass(frozen=True, kw_only=True)
class VolumeGroup:
    name: str
    size: int
    free: int
    extent_size: int
    lock_type: str
    pv_count: int
    lv_count: int


def check_name(value: str, *, field: str) -> str:
    if value in (".", "..") or not _NAME.match(value):
        raise InvalidArgument(
            f"{value!r} is not a valid LVM name: 1-127 of A-Z a-z 0-9 + _ . -, not starting with '-'",
            field=field,
            reason="BAD_LVM_NAME",
        )
    return value


class Lvm:
    def __init__(self, runner: Runner = run_command, *, devices: Sequence[str] = ()) -> None:
        self._run = runner
        self._devices = tuple(devices)

    def common(self, *, lockd: bool = False) -> list[str]:
        """Options every command gets (see the module docstring)."""
        config = "activation { udev_sync=0 udev_rules=0 }"
        if lockd:
            config += " global { use_lvmlockd=1 }"
        argv = ["--config", config]
        if self._devices:
            argv += ["--devices", ",".join(self._devices)]
        return argv

    def build_pvcreate(self, device: str) -> list[str]:
        return ["pvcreate", *self.common(), device]

    def build_vgcreate(self, name: str, devices: Sequence[str], *, shared: bool) -> list[str]:
        check_name(name, field="pool.vg_name")
        shared_args = ["--shared", "--lock-type", "sanlock"] if shared else []
        return ["vgcreate", *self.common(lockd=shared), *shared_args, name, *devices]

    def build_vgs(self, name: str) -> list[str]:
        check_name(name, field="pool.vg_name")
        fields = ",".join(_VG_FIELDS)
        return [
            "vgs",
            *self.common(),
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
            name,
        ]

    def build_lvcreate(self, vg: str, name: str, size: int, *, shared: bool) -> list[str]:
        check_name(vg, field="pool.vg_name")
        check_name(name, field="volume_id")
        # -an: a new LV on a shared VG is activated by the host that uses it, under its lock.
        activate = ["-an"] if shared else []
        return ["lvcreate", *self.common(lockd=shared), *activate, "-L", f"{size}b", "-n", name, vg]

    def pvcreate(self, device: str) -> None:
        self._check(self._run(self.build_pvcreate(device)))

    def vgcreate(self, name: str, devices: list[str], *, shared: bool) -> None:
        self._check(self._run(self.build_vgcreate(name, devices, shared=shared)))

    def vg(self, name: str) -> VolumeGroup:
        done = self._run(self.build_vgs(name))
        if done.returncode != 0 and (
            "not found" in done.stderr or "Cannot process volume group" in done.stderr
        ):
            raise NotFound(f"volume group {name!r} not found on the pool's devices", field="pool.vg_name")
        self._check(done)
        return parse_vgs(done.stdout)[0]

    def lvcreate(self, vg: str, name: str, size: int, *, shared: bool) -> None:
        self._check(self._run(self.build_lvcreate(vg, name, size, shared=shared)))

    def vgremove(self, name: str) -> None:
        self._check(self._run(["vgremove", *self.common(), "-f", check_name(name, field="pool.vg_name")]))

    def pvremove(self, device: str) -> None:
        self._check(self._run(["pvremove", *self.common(), device]))

    def _check(self, done: Completed) -> None:
        if done.returncode == 0:
            return
        lines = [x.strip() for x in done.stderr.splitlines() if x.strip()]
        detail = next((x for x in lines if "--help" not in x), f"exit status {done.returncode}")
        # The telling line is not always the first (libdevmapper complains before LVM does).
        dm = next((x for x in lines if "device-mapper" in x), None)
        if dm is not None:
            raise FailedPrecondition(
                f"{done.argv[0]}: {dm} (this kernel has no device-mapper)", reason="DEVICE_MAPPER_MISSING"
            )
        lockd = next((x for x in lines if "lvmlockd" in x), None)
        if lockd is not None:
            raise FailedPrecondition(f"{done.argv[0]}: {lockd}", reason="LVMLOCKD_MISSING")
        raise FailedPrecondition(f"{done.argv[0]} failed: {detail}", reason="LVM_FAILED")


def parse_vgs(stdout: str) -> list[VolumeGroup]:
    rows = json.loads(stdout)["report"][0]["vg"]
    return [
        VolumeGroup(
            name=r["vg_name"],
            size=int(r["vg_size"]),
            free=int(r["vg_free"]),
            extent_size=int(r["vg_extent_size"]),
            lock_type=r["vg_lock_type"],
            pv_count=int(r["pv_count"]),
            lv_count=int(r["lv_count"]),
        )
        for r in rows
    ]


@dataclass(frozen=True, kw_only=True)
class BlockDevices:
    """The kernel's view of block devices and features (paths injectable for tests)."""

    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")
    dev: Path = Path("/dev")
    run: Path = Path("/run")

    def device_mapper(self) -> bool:
        try:
            misc = (self.procfs / "misc").read_text()
        except OSError:
            return False
        if not any(line.split()[-1:] == ["device-mapper"] for line in misc.splitlines()):
            return False
        try:
            fd = os.open(self.dev / "mapper" / "control", os.O_RDWR)
        except OSError:
            return False
        os.close(fd)
        return True

    def lvmlockd(self) -> bool:
        """lvmlockd runs (its pid file names a live process)."""
        try:
            pid = int((self.run / "lvmlockd.pid").read_text().strip())
        except (OSError, ValueError):
            return False
        return (self.procfs / str(pid)).exists()

    def wwids(self) -> dict[str, str]:
        """WWID -> /dev path of every disk that has one; a multipath map wins over its paths."""
        found: dict[str, str] = {}
        for block in sorted((self.sysfs / "block").glob("*")):
            wwid_file = block / "device" / "wwid"
            if wwid_file.exists():
                found.setdefault(_norm(wwid_file.read_text()), str(self.dev / block.name))
        for block in sorted((self.sysfs / "block").glob("dm-*")):
            try:
                uuid = (block / "dm" / "uuid").read_text().strip()
                name = (block / "dm" / "name").read_text().strip()
            except OSError:
                continue
            if uuid.startswith("mpath-"):
                found[_norm(uuid.removeprefix("mpath-"))] = str(self.dev / "mapper" / name)
        return found

    def device_for_wwid(self, wwid: str) -> str | None:
        return self.wwids().get(_norm(wwid))


def _norm(wwid: str) -> str:
    # sysfs gives "naa.600a0b80..." while multipath uses "3600a0b80...": compare the hex id.
    value = wwid.strip().lower()
    for prefix in ("naa.", "eui.", "t10."):
        if value.startswith(prefix):
            return "3" + value.removeprefix(prefix) if prefix == "naa." else value.removeprefix(prefix)
    return value
