from __future__ import annotations

import shutil

import pytest

from tests.unit.host.conftest import FakeHost
from zsd.host import sysinfo
from zsd.host.model import CpuFacts, MemoryFacts, NumaNodeFacts


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8,10-11", (0, 1, 2, 3, 8, 10, 11)),
        ("0\n", (0,)),
        ("", ()),
        ("5,1-2", (1, 2, 5)),
        ("0-1,1-2", (0, 1, 2)),
    ],
)
def test_parse_cpulist(text: str, cpus: tuple[int, ...]) -> None:
    assert sysinfo.parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["a-b", "3-1", "1,,x"])
def test_parse_cpulist_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        sysinfo.parse_cpulist(text)


def test_cpu_identity_and_topology(fake_host: FakeHost) -> None:
    problems: list[str] = []
    cpus = sysinfo.online_cpus(sysfs=fake_host.sysfs, procfs=fake_host.procfs, problems=problems)
    cpu = sysinfo.read_cpu(sysfs=fake_host.sysfs, procfs=fake_host.procfs, cpus=cpus, problems=problems)

    assert cpus == (0, 1, 2, 3, 4, 5, 6, 7)
    assert cpu == CpuFacts(
        model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        vendor="GenuineIntel",
        arch="x86_64",
        sockets=2,
        cores_per_socket=2,
        threads_per_core=2,
        count=8,
        flags=("fpu", "vme", "de", "pse", "vmx", "avx2"),
    )
    assert problems == []


def test_online_cpus_without_summary_file_skips_offline_cpus(fake_host: FakeHost) -> None:
    (fake_host.sysfs / "devices/system/cpu/online").unlink()
    problems: list[str] = []

    cpus = sysinfo.online_cpus(sysfs=fake_host.sysfs, procfs=fake_host.procfs, problems=problems)

    assert cpus == (0, 1, 2, 3, 4, 5, 6, 7)  # cpu8 says online=0
    assert problems == []


def test_online_cpus_fall_back_to_cpuinfo(fake_host: FakeHost) -> None:
    shutil.rmtree(fake_host.sysfs / "devices/system/cpu")
    problems: list[str] = []

    cpus = sysinfo.online_cpus(sysfs=fake_host.sysfs, procfs=fake_host.procfs, problems=problems)

    assert cpus == tuple(range(8))
    assert len(problems) == 1
    assert "no online CPUs" in problems[0]


def test_missing_topology_assumes_one_socket_without_smt(fake_host: FakeHost) -> None:
    for n in range(9):
        shutil.rmtree(fake_host.sysfs / f"devices/system/cpu/cpu{n}/topology")
    problems: list[str] = []

    cpu = sysinfo.read_cpu(
        sysfs=fake_host.sysfs, procfs=fake_host.procfs, cpus=(0, 1, 2, 3), problems=problems
    )

    assert (cpu.sockets, cpu.cores_per_socket, cpu.threads_per_core, cpu.count) == (1, 4, 1, 4)
    assert any("topology" in p for p in problems)


def test_cpu_without_cpuinfo_is_a_problem(fake_host: FakeHost) -> None:
    (fake_host.procfs / "cpuinfo").unlink()
    problems: list[str] = []

    cpu = sysinfo.read_cpu(sysfs=fake_host.sysfs, procfs=fake_host.procfs, cpus=(0, 1), problems=problems)

    assert (cpu.model, cpu.vendor, cpu.flags, cpu.count) == ("", "", (), 2)
    assert any("cpuinfo" in p for p in problems)


def test_memory(fake_host: FakeHost) -> None:
    problems: list[str] = []

    memory = sysinfo.read_memory(procfs=fake_host.procfs, problems=problems)

    assert memory == MemoryFacts(total_bytes=16384000 * 1024, available_bytes=8192000 * 1024)
    assert problems == []


def test_memory_without_memavailable_reports_memfree(fake_host: FakeHost) -> None:
    fake_host.write({"proc/meminfo": "MemTotal:  2048 kB\nMemFree:  1024 kB\n"})
    problems: list[str] = []

    memory = sysinfo.read_memory(procfs=fake_host.procfs, problems=problems)

    assert memory == MemoryFacts(total_bytes=2048 * 1024, available_bytes=1024 * 1024)
    assert len(problems) == 1


def test_numa_nodes(fake_host: FakeHost) -> None:
    problems: list[str] = []

    nodes = sysinfo.read_numa(sysfs=fake_host.sysfs, cpus=tuple(range(8)), memory_total=1, problems=problems)

    assert nodes == (
        NumaNodeFacts(id=0, cpus=(0, 1, 2, 3), memory_bytes=8192000 * 1024),
        NumaNodeFacts(id=1, cpus=(4, 5, 6, 7), memory_bytes=8192000 * 1024),
    )
    assert problems == []


def test_numa_cpulist_with_ranges_and_singles(fake_host: FakeHost) -> None:
    fake_host.write({"sys/devices/system/node/node1/cpulist": "4-5,8,10-11\n"})

    nodes = sysinfo.read_numa(sysfs=fake_host.sysfs, cpus=(), memory_total=0, problems=[])

    assert nodes[1].cpus == (4, 5, 8, 10, 11)


def test_numa_without_node_dirs_is_one_node_with_everything(fake_host: FakeHost) -> None:
    shutil.rmtree(fake_host.sysfs / "devices/system/node")
    problems: list[str] = []

    nodes = sysinfo.read_numa(sysfs=fake_host.sysfs, cpus=(0, 1, 2), memory_total=4096, problems=problems)

    assert nodes == (NumaNodeFacts(id=0, cpus=(0, 1, 2), memory_bytes=4096),)
    assert problems == []


def test_numa_node_with_bad_files_is_a_problem(fake_host: FakeHost) -> None:
    fake_host.write({"sys/devices/system/node/node1/cpulist": "x\n"})
    (fake_host.sysfs / "devices/system/node/node1/meminfo").unlink()
    problems: list[str] = []

    nodes = sysinfo.read_numa(sysfs=fake_host.sysfs, cpus=(), memory_total=0, problems=problems)

    assert nodes[1] == NumaNodeFacts(id=1, cpus=(), memory_bytes=0)
    assert len(problems) == 2


def test_kernel_os_and_boot_time(fake_host: FakeHost) -> None:
    problems: list[str] = []

    assert sysinfo.read_kernel(procfs=fake_host.procfs, problems=problems) == "6.1.0-50-amd64"
    assert (
        sysinfo.read_os(os_release=fake_host.os_release, problems=problems)
        == "Debian GNU/Linux 12 (bookworm)"
    )
    assert sysinfo.read_boot_time(procfs=fake_host.procfs, problems=problems) == 1700000000.0
    assert problems == []


def test_os_release_unquoted_and_escaped_values(fake_host: FakeHost) -> None:
    fake_host.write({"etc/os-release": "# comment\nNAME=Alpine\nPRETTY_NAME='Alpine \"edge\"'\n"})

    assert sysinfo.read_os(os_release=fake_host.os_release, problems=[]) == 'Alpine "edge"'

    fake_host.write({"etc/os-release": "NAME=Alpine\n"})
    assert sysinfo.read_os(os_release=fake_host.os_release, problems=[]) == "Alpine"


def test_missing_kernel_os_and_boot_time_are_problems(fake_host: FakeHost) -> None:
    for relative in ("proc/sys/kernel/osrelease", "etc/os-release", "proc/stat"):
        (fake_host.root / relative).unlink()
    problems: list[str] = []

    assert sysinfo.read_kernel(procfs=fake_host.procfs, problems=problems) == ""
    assert sysinfo.read_os(os_release=fake_host.os_release, problems=problems) == ""
    assert sysinfo.read_boot_time(procfs=fake_host.procfs, problems=problems) == 0.0
    assert len(problems) == 3
