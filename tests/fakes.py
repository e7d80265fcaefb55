"""Test doubles for unit tests: plain data holders (facts that are returned as given,
notifications that are recorded), with no behaviour of their own to get wrong."""

from __future__ import annotations

import time

import trio

from zsd.host.model import (
    CpuFacts,
    DiskFacts,
    HostFacts,
    HypervisorFacts,
    HypervisorKind,
    MemoryFacts,
    NicFacts,
    NumaNodeFacts,
)


def sample_facts(*, problems: tuple[str, ...] = ()) -> HostFacts:
    return HostFacts(
        hypervisor=HypervisorFacts(kind=HypervisorKind.QEMU, reason="configured", libvirt_reachable=False),
        cpu=CpuFacts(
            model="Test CPU",
            vendor="GenuineTest",
            arch="x86_64",
            sockets=1,
            cores_per_socket=2,
            threads_per_core=1,
            count=2,
            flags=("sse2", "vmx"),
        ),
        memory=MemoryFacts(total_bytes=8 << 30, available_bytes=6 << 30),
        numa_nodes=(NumaNodeFacts(id=0, cpus=(0, 1), memory_bytes=8 << 30),),
        disks=(DiskFacts(name="vda", size_bytes=20 << 30, rotational=False),),
        nics=(
            NicFacts(
                name="eth0", mac_address="52:54:00:00:00:01", mtu=1500, up=True, addresses=("192.0.2.10/24",)
            ),
        ),
        kernel="6.1.0-test",
        os="Debian GNU/Linux 12 (bookworm)",
        boot_time=time.time() - 3600,
        collected_at=time.time(),
        problems=problems,
    )


class StaticCollector:
    """Returns the same facts every time, optionally after a delay; counts calls."""

    def __init__(self, facts: HostFacts, *, delay: float = 0.0) -> None:
        self.facts = facts
        self.delay = delay
        self.calls = 0

    async def collect(self) -> HostFacts:
        self.calls += 1
        await trio.sleep(self.delay)
        return self.facts


class RecordingNotifier:
    """Keeps every systemd notification in order."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def notify(self, message: str) -> None:
        self.messages.append(message)

    def states(self) -> list[str]:
        return [line for m in self.messages for line in m.split("\n")]
