"""CPU, memory, NUMA, kernel, OS and boot-time facts from procfs, sysfs and os-release.

Every reader takes the roots it reads from (so tests point them at a fake
tree) and appends a human-readable line to ``problems`` for anything missing
instead of raising: a host with an odd kernel still gets an inventory.
"""

from __future__ import annotations

import platform
import shlex
from pathlib import Path

from zsd.host.model import CpuFacts, MemoryFacts, NumaNodeFacts


def read_text(path: Path) -> str | None:
    """The stripped contents of a small kernel file, or None if it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        # sysfs answers some reads with EINVAL (e.g. a down NIC's speed): same as absent.
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse the kernel's cpulist format ("0-3,8,10-11"); an empty list is ()."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        start = int(first)
        end = int(last) if sep else start
        if end < start:
            raise ValueError(f"bad cpulist range {part!r}")
        cpus.update(range(start, end + 1))
    return tuple(sorted(cpus))


def _numbered_dirs(parent: Path, prefix: str) -> dict[int, Path]:
    """{N: parent/prefixN} for the directories named prefix + digits."""
    found: dict[int, Path] = {}
    try:
        entries = list(parent.iterdir())
    except OSError:
        return found
    for entry in entries:
        suffix = entry.name.removeprefix(prefix)
        if entry.name.startswith(prefix) and suffix.isdigit() and entry.is_dir():
            found[int(suffix)] = entry
    return found


def _first_processor(cpuinfo: str) -> dict[str, str]:
    """Key/value pairs of the first processor block of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def online_cpus(*, sysfs: Path, procfs: Path, problems: list[str]) -> tuple[int, ...]:
    cpu_dir = sysfs / "devices/system/cpu"
    text = read_text(cpu_dir / "online")
    if text is not None:
        try:
            return parse_cpulist(text)
        except ValueError:
            problems.append(f"cannot parse {cpu_dir / 'online'}: {text!r}")
    # Without the summary file: every cpuN whose own "online" is not 0 (cpu0
    # usually has no such file because it cannot go offline).
    cpus = tuple(
        n for n, path in sorted(_numbered_dirs(cpu_dir, "cpu").items()) if read_text(path / "online") != "0"
    )
    if cpus:
        return cpus
    problems.append(f"no online CPUs found in {cpu_dir}; counting processors in cpuinfo")
    processors = sum(
        1
        for line in (read_text(procfs / "cpuinfo") or "").splitlines()
        if line.split(":")[0].strip() == "processor"
    )
    return tuple(range(max(1, processors)))


def read_cpu(*, sysfs: Path, procfs: Path, cpus: tuple[int, ...], problems: list[str]) -> CpuFacts:
    """CPU identity from cpuinfo and topology of the online ``cpus`` from sysfs."""
    cpuinfo = read_text(procfs / "cpuinfo")
    if cpuinfo is None:
        problems.append(f"cannot read {procfs / 'cpuinfo'}")
        cpuinfo = ""
    first = _first_processor(cpuinfo)
    # x86 names first; the others are what arm64 and ppc64 kernels print instead.
    model = first.get("model name") or first.get("cpu") or first.get("Hardware", "")
    vendor = first.get("vendor_id") or first.get("CPU implementer", "")
    flags = tuple((first.get("flags") or first.get("Features", "")).split())
    if not model:
        problems.append("CPU model not found in cpuinfo")

    packages: set[int] = set()
    cores: set[tuple[int, int]] = set()
    missing_topology = False
    for cpu in cpus:
        topology = sysfs / f"devices/system/cpu/cpu{cpu}/topology"
        package = read_int(topology / "physical_package_id")
        core = read_int(topology / "core_id")
        if package is None or core is None:
            # Best guess without topology: one socket, no SMT.
            missing_topology = True
            package, core = 0, cpu
        packages.add(package)
        cores.add((package, core))
    if missing_topology:
        problems.append(
            "CPU topology missing in sysfs for some CPUs; assumed one socket, one thread per core"
        )
    return CpuFacts(
        model=model,
        vendor=vendor,
        arch=read_arch(procfs=procfs),
        sockets=max(1, len(packages)),
        cores_per_socket=max(1, len(cores) // max(1, len(packages))),
        threads_per_core=max(1, len(cpus) // max(1, len(cores))),
        count=len(cpus),
        flags=flags,
    )


def read_arch(*, procfs: Path) -> str:
    # kernel.arch exists since Linux 5.19; uname is the same answer for the real procfs.
    return read_text(procfs / "sys/kernel/arch") or platform.machine()


def _meminfo_bytes(text: str) -> dict[str, int]:
    """Lines like "MemTotal:  16314344 kB" or "Node 0 MemTotal: ..." -> {"MemTotal": bytes}."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not words or not words[0].isdigit():
            continue
        unit = 1024 if words[1:] == ["kB"] else 1
        values[key.split()[-1]] = int(words[0]) * unit
    return values


def read_memory(*, procfs: Path, problems: list[str]) -> MemoryFacts:
    text = read_text(procfs / "meminfo")
    if text is None:
        problems.append(f"cannot read {procfs / 'meminfo'}")
        return MemoryFacts(total_bytes=0, available_bytes=0)
    values = _meminfo_bytes(text)
    if "MemTotal" not in values:
        problems.append("MemTotal not found in meminfo")
    if "MemAvailable" not in values:
        problems.append("MemAvailable not found in meminfo; reporting MemFree")
    return MemoryFacts(
        total_bytes=values.get("MemTotal", 0),
        available_bytes=values.get("MemAvailable", values.get("MemFree", 0)),
    )


def read_numa(
    *, sysfs: Path, cpus: tuple[int, ...], memory_total: int, problems: list[str]
) -> tuple[NumaNodeFacts, ...]:
    """NUMA nodes from sysfs; a kernel without NUMA support is one node holding everything."""
    node_dirs = _numbered_dirs(sysfs / "devices/system/node", "node")
    if not node_dirs:
        return (NumaNodeFacts(id=0, cpus=cpus, memory_bytes=memory_total),)
    nodes = []
    for node_id, path in sorted(node_dirs.items()):
        cpulist = read_text(path / "cpulist")
        try:
            node_cpus = parse_cpulist(cpulist or "")
        except ValueError:
            problems.append(f"cannot parse {path / 'cpulist'}: {cpulist!r}")
            node_cpus = ()
        meminfo = read_text(path / "meminfo")
        memory = _meminfo_bytes(meminfo or "").get("MemTotal")
        if memory is None:
            problems.append(f"MemTotal not found in {path / 'meminfo'}")
        nodes.append(NumaNodeFacts(id=node_id, cpus=node_cpus, memory_bytes=memory or 0))
    return tuple(nodes)


def read_kernel(*, procfs: Path, problems: list[str]) -> str:
    release = read_text(procfs / "sys/kernel/osrelease")
    if not release:
        problems.append(f"cannot read {procfs / 'sys/kernel/osrelease'}")
    return release or ""


def read_os(*, os_release: Path, problems: list[str]) -> str:
    text = read_text(os_release)
    if text is None:
        problems.append(f"cannot read {os_release}")
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            # os-release values use shell quoting: PRETTY_NAME="Debian GNU/Linux 12 (bookworm)".
            words = shlex.split(value)
        except ValueError:
            words = [value]
        fields[key.strip()] = " ".join(words)
    name = fields.get("PRETTY_NAME") or fields.get("NAME", "")
    if not name:
        problems.append(f"no PRETTY_NAME in {os_release}")
    return name


def read_boot_time(*, procfs: Path, problems: list[str]) -> float:
    for line in (read_text(procfs / "stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "btime" and value.strip().isdigit():
            return float(value)
    problems.append(f"btime not found in {procfs / 'stat'}")
    return 0.0
