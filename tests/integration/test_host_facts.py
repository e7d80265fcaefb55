"""Host facts on the real machine: real /sys, /proc, /dev/kvm and whatever libvirtd is there.

libvirtd may or may not run here, and /dev/kvm may or may not be usable, so the
assertions check that the answer is coherent with what psutil and the kernel say.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from zsd.host.facts import default_collector
from zsd.host.kvmprobe import probe_kvm
from zsd.host.model import HypervisorKind

pytestmark = pytest.mark.integration

PROBE_TIMEOUT = 3.0
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# A PVM host (KVM without hardware virtualisation): /dev/kvm is there but real guests fail.
PVM_HOST = Path("/sys/module/kvm_pvm").exists()


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    # Compared with what was there before: other tests' fixtures may own children.
    before = set(psutil.Process().children(recursive=True))
    yield
    assert set(psutil.Process().children(recursive=True)) - before == set()


async def test_collect_on_this_machine() -> None:
    collector = default_collector(
        sysfs=Path("/sys"),
        procfs=Path("/proc"),
        libvirt_uri="qemu:///system",
        hypervisor="auto",
        probe_timeout=PROBE_TIMEOUT,
    )
    started = time.monotonic()

    facts = await collector.collect()

    # Bounded by the probe's deadline (timeout + margin) and libvirt's (5 s).
    assert time.monotonic() - started < PROBE_TIMEOUT + 5.0
    cpu = facts.cpu
    assert cpu.count == psutil.cpu_count()
    assert 1 <= cpu.sockets * cpu.cores_per_socket * cpu.threads_per_core <= cpu.count
    assert cpu.arch == platform.machine()
    assert cpu.model

    memory = psutil.virtual_memory()
    assert abs(facts.memory.total_bytes - memory.total) <= memory.total * 0.01
    assert 0 < facts.memory.available_bytes <= facts.memory.total_bytes

    numa_cpus = sorted(c for node in facts.numa_nodes for c in node.cpus)
    assert len(numa_cpus) == cpu.count == len(set(numa_cpus))
    assert 0 < sum(node.memory_bytes for node in facts.numa_nodes) <= facts.memory.total_bytes * 1.01

    assert {nic.name for nic in facts.nics} == set(psutil.net_if_stats()) - {"lo"}
    stats = psutil.net_if_stats()
    assert all(nic.mtu == stats[nic.name].mtu for nic in facts.nics)
    block = set(os.listdir("/sys/block"))
    assert {disk.name for disk in facts.disks} <= block
    assert not any(disk.name.startswith(("loop", "ram", "zram", "dm-", "sr")) for disk in facts.disks)

    assert facts.kernel == os.uname().release
    assert facts.os
    assert abs(facts.boot_time - psutil.boot_time()) <= 1.0

    hypervisor = facts.hypervisor
    if hypervisor.libvirt_reachable:
        assert VERSION.match(hypervisor.libvirt_version) and VERSION.match(hypervisor.qemu_version)
    else:
        assert (hypervisor.libvirt_version, hypervisor.qemu_version) == ("", "")
        assert any("qemu:///system" in p for p in facts.problems)
    kvm_problems = [p for p in facts.problems if p.startswith("KVM not usable")]
    if hypervisor.kind is HypervisorKind.KVM:
        assert kvm_problems == []
    else:
        assert len(kvm_problems) == 1
    if PVM_HOST:
        assert hypervisor.kind is HypervisorKind.QEMU


def test_real_kvm_probe() -> None:
    started = time.monotonic()

    result = probe_kvm(timeout=PROBE_TIMEOUT)

    assert time.monotonic() - started < PROBE_TIMEOUT + 2.0
    assert result.reason
    if not Path("/dev/kvm").exists():
        assert result.reason == "no /dev/kvm"
    if PVM_HOST:
        assert not result.usable
        assert "KVM_RUN" in result.reason
