"""A fake machine: sysfs, procfs and os-release trees under tmp_path.

The default machine has 2 sockets x 2 cores x 2 threads (cpu0-7 online, cpu8
offline), 2 NUMA nodes, three real disks among loop/ram/zram/dm/sr devices and
two NICs besides lo. Tests change single files to make their point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from zsd.host.model import DiskFacts

GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class FakeHost:
    root: Path

    @property
    def sysfs(self) -> Path:
        return self.root / "sys"

    @property
    def procfs(self) -> Path:
        return self.root / "proc"

    @property
    def os_release(self) -> Path:
        return self.root / "etc/os-release"

    def write(self, files: Mapping[str, str]) -> None:
        """Write files given relative to the fake root ("sys/...", "proc/...")."""
        for relative, content in files.items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    def link(self, relative: str, target: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


CPUINFO_BLOCK = """processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: {package}
flags\t\t: fpu vme de pse vmx avx2
"""

MEMINFO = """MemTotal:       16384000 kB
MemFree:         1000000 kB
MemAvailable:    8192000 kB
Buffers:          100000 kB
"""


def _cpu_files() -> dict[str, str]:
    files = {"sys/devices/system/cpu/online": "0-7\n", "sys/devices/system/cpu/possible": "0-8\n"}
    for n in range(9):
        base = f"sys/devices/system/cpu/cpu{n}"
        files[f"{base}/topology/physical_package_id"] = f"{n // 4}\n"
        files[f"{base}/topology/core_id"] = f"{(n // 2) % 2}\n"
        if n:
            files[f"{base}/online"] = "0\n" if n == 8 else "1\n"
    files["proc/cpuinfo"] = "\n".join(CPUINFO_BLOCK.format(n=n, package=n // 4) for n in range(8))
    return files


def _numa_files() -> dict[str, str]:
    return {
        "sys/devices/system/node/online": "0-1\n",
        "sys/devices/system/node/node0/cpulist": "0-3\n",
        "sys/devices/system/node/node0/meminfo": "Node 0 MemTotal:        8192000 kB\n"
        "Node 0 MemFree:          500000 kB\n",
        "sys/devices/system/node/node1/cpulist": "4-7\n",
        "sys/devices/system/node/node1/meminfo": "Node 1 MemTotal:        8192000 kB\n",
    }


def _disk_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for name in ("loop0", "ram0", "zram0", "dm-0", "sr0"):
        files[f"sys/block/{name}/size"] = "2048\n"
        files[f"sys/block/{name}/queue/rotational"] = "0\n"
    files |= {
        "sys/block/sda/size": "3907029168\n",
        "sys/block/sda/queue/rotational": "1\n",
        "sys/block/sda/device/model": "ST2000NM0055-1V4\n",
        "sys/block/sda/device/serial": "ZC20ABCD\n",
        "sys/block/sda/device/wwid": "naa.5000c500a1b2c3d4\n",
        "sys/block/nvme0n1/size": "1953525168\n",
        "sys/block/nvme0n1/queue/rotational": "0\n",
        "sys/block/nvme0n1/device/model": "Samsung SSD 980 PRO 1TB                 \n",
        "sys/block/nvme0n1/device/serial": "S5GXNX0R123456\n",
        "sys/block/nvme0n1/wwid": "eui.002538b111b22c33\n",
        "sys/block/vda/size": "20971520\n",
        "sys/block/vda/queue/rotational": "1\n",
        "sys/block/vda/serial": "vol-1234",
    }
    return files


def _nic_files() -> dict[str, str]:
    return {
        "sys/class/net/lo/address": "00:00:00:00:00:00\n",
        "sys/class/net/lo/mtu": "65536\n",
        "sys/class/net/lo/operstate": "unknown\n",
        "sys/class/net/eno1/address": "3c:ec:ef:01:02:03\n",
        "sys/class/net/eno1/mtu": "9000\n",
        "sys/class/net/eno1/operstate": "up\n",
        "sys/class/net/eno1/speed": "10000\n",
        "sys/class/net/br0/address": "52:54:00:aa:bb:cc\n",
        "sys/class/net/br0/mtu": "1500\n",
        "sys/class/net/br0/operstate": "down\n",
        "sys/class/net/br0/speed": "-1\n",
    }


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(root=tmp_path)
    host.write(_cpu_files())
    host.write(_numa_files())
    host.write(_disk_files())
    host.write(_nic_files())
    host.link("sys/class/net/eno1/device/driver", "../../../../bus/pci/drivers/ixgbe")
    host.write(
        {
            "proc/meminfo": MEMINFO,
            "proc/sys/kernel/osrelease": "6.1.0-50-amd64\n",
            "proc/sys/kernel/arch": "x86_64\n",
            "proc/stat": "cpu  1 2 3 4\nintr 5\nbtime 1700000000\nprocesses 42\n",
            "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
            'NAME="Debian GNU/Linux"\nID=debian\n',
        }
    )
    return host


# What the fake tree's block devices must read as (loop, ram, dm and sr devices skipped).
EXPECTED_DISKS = (
    DiskFacts(
        name="nvme0n1",
        size_bytes=1953525168 * 512,
        rotational=False,
        model="Samsung SSD 980 PRO 1TB",
        serial="S5GXNX0R123456",
        wwid="eui.002538b111b22c33",
    ),
    DiskFacts(
        name="sda",
        size_bytes=3907029168 * 512,
        rotational=True,
        model="ST2000NM0055-1V4",
        serial="ZC20ABCD",
        wwid="naa.5000c500a1b2c3d4",
    ),
    DiskFacts(name="vda", size_bytes=20971520 * 512, rotational=True, serial="vol-1234"),
)
