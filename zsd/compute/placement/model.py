"""The typed boundary of the placement engine: what the leader knows about each host
and each VM, the overcommit ratios, and the decision it gets back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from zsd.errors import InvalidArgument
from zsd.host.pci import PciDevice

Strategy = Literal["spread", "pack"]
STRATEGIES: tuple[Strategy, ...] = ("spread", "pack")

MAX_CPU_RATIO = 32.0
MAX_MEMORY_RATIO = 4.0


@dataclass(frozen=True, kw_only=True)
class HostState:
    name: str
    alive: bool
    """Gossip says the host is alive."""
    lease_live: bool
    """The host's sanlock host lease is live (it can acquire VM leases)."""
    maintenance: bool = False
    cpus: int
    """Physical threads."""
    memory_mib: int
    used_vcpus: int = 0
    used_memory_mib: int = 0
    """What VMs already placed there take, including every VM in the placements the
    engine is built with (those feed the group index only, never usage)."""
    pools: frozenset[str] = frozenset()
    """Storage pools this host reaches."""
    networks: frozenset[str] = frozenset()
    """Port groups present on this host."""
    pci_devices: tuple[PciDevice, ...] = ()
    """The PCI functions the host last reported, for passthrough (the scheduler gives
    only those a VM asking for devices needs: them and their IOMMU groups)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    down: str = ""
    """Why the host cannot take VMs at all for a reason the caller knows (no inventory
    reported yet, not serving); checked before alive/lease."""


@dataclass(frozen=True, kw_only=True)
class VmDemand:
    name: str
    vcpus: int
    memory_mib: int
    pools: frozenset[str] = frozenset()
    """Every pool the VM's disks are on."""
    networks: frozenset[str] = frozenset()
    group: str = ""
    """The VM scheduling group it belongs to; "" for none."""
    hostdevs: tuple[str, ...] = ()
    """Host PCI addresses the VM is given (each one VM's at a time)."""


def validate_demand(demand: VmDemand) -> VmDemand:
    if not demand.name:
        raise InvalidArgument("a VM needs a name", field="vm.name")
    if demand.vcpus < 1:
        raise InvalidArgument(f"must be at least 1 (got {demand.vcpus})", field="vm.vcpus")
    if demand.memory_mib < 1:
        raise InvalidArgument(f"must be at least 1 (got {demand.memory_mib})", field="vm.memory_mib")
    return demand


@dataclass(frozen=True, kw_only=True)
class Placement:
    """A VM the cluster has already put on a host."""

    host: str
    group: str = ""
    vcpus: int
    memory_mib: int
    hostdevs: tuple[str, ...] = ()
    """The host's PCI devices the VM holds."""


@dataclass(frozen=True, kw_only=True)
class Overcommit:
    cpu: float = 4.0
    memory: float = 1.0

    def __post_init__(self) -> None:
        # Written as "not inside" so that NaN is refused too.
        if not 0 < self.cpu <= MAX_CPU_RATIO:
            raise InvalidArgument(
                f"must be above 0 and at most {MAX_CPU_RATIO:g} (got {self.cpu})", field="overcommit.cpu"
            )
        if not 0 < self.memory <= MAX_MEMORY_RATIO:
            raise InvalidArgument(
                f"must be above 0 and at most {MAX_MEMORY_RATIO:g} (got {self.memory})",
                field="overcommit.memory",
            )

    def vcpus(self, cpus: int) -> int:
        return _scaled(cpus, self.cpu)

    def memory_mib(self, memory_mib: int) -> int:
        return _scaled(memory_mib, self.memory)


def _scaled(amount: int, ratio: float) -> int:
    # Usage is whole units, so "used + demand <= amount * ratio" is "<= floor(...)";
    # the rounding keeps 3 * 0.7 (2.0999...) from losing a unit to binary floats.
    return math.floor(round(amount * ratio, 6))


@dataclass(frozen=True, kw_only=True)
class Decision:
    vm: str
    host: str
    rejected: Mapping[str, str]
    """Every host that could not take the VM, with why."""
