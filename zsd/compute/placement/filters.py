"""Why a host cannot take a VM: one reason per rejected host, the first that applies.

The order is fixed: alive and lease, maintenance, pools, networks, PCI devices, the
group's mandatory policy, then CPU and memory. Reasons that do not change with
placements come first, so a host that could never run the VM is not reported as
merely full; capacity comes last because it is the only answer that moves with every
placement (which VM holds a PCI device moves too, but only matters to VMs that ask
for devices). The fixed reasons are computed once per pool/network/device combination
(``FixedFilters``), which is what keeps a placement among 1000 hosts cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from types import MappingProxyType
from typing import TYPE_CHECKING

from zsd.compute import pciassign
from zsd.compute.placement.model import HostState, VmDemand
from zsd.errors import FailedPrecondition, NotFound

if TYPE_CHECKING:
    from zsd.compute.placement.ledger import Ledger
    from zsd.compute.placement.policies import Rule

_NOBODY: Mapping[str, str] = MappingProxyType({})

# Distinct pool/network combinations are few (one per storage/network layout), and so
# are device lists (one per kind of passthrough VM); the bound only keeps a leader that
# lives for months from growing without end.
_MAX_CACHED = 4096


def static_reason(host: HostState) -> str:
    """ "" when the host may take VMs at all."""
    if host.down:
        return host.down
    if not host.alive:
        return "not alive"
    if not host.lease_live:
        return "sanlock lease not live"
    if host.maintenance:
        return "in maintenance"
    return ""


def reach_reason(host: HostState, demand: VmDemand) -> str:
    missing = demand.pools - host.pools
    if missing:
        return f"cannot reach pool(s) {', '.join(sorted(missing))}"
    absent = demand.networks - host.networks
    if absent:
        return f"lacks network(s) {', '.join(sorted(absent))}"
    return ""


def device_reason(host: HostState, demand: VmDemand, held: Mapping[str, str] = _NOBODY) -> str:
    """Why ``host`` cannot give ``demand`` its PCI devices: the exclusive-assignment
    rules (``pciassign``, as the host itself checks them at create) over the inventory
    the host reported; ``held``: PCI address -> the VM placed there that holds it."""
    try:
        pciassign.check(demand.name, demand.hostdevs, host.pci_devices, held)
    except (NotFound, FailedPrecondition) as e:
        return e.message
    return ""


def capacity_reason(
    *, free_vcpus: int, cap_vcpus: int, free_memory_mib: int, cap_memory_mib: int, demand: VmDemand
) -> str:
    if free_vcpus < demand.vcpus:
        return f"{free_vcpus} vCPUs free of {cap_vcpus} (needs {demand.vcpus})"
    if free_memory_mib < demand.memory_mib:
        return f"{free_memory_mib} MiB free of {cap_memory_mib} (needs {demand.memory_mib})"
    return ""


class FixedFilters:
    """The filters whose answer does not depend on placements, cached per demand shape."""

    def __init__(self, hosts: Sequence[HostState]) -> None:
        self._hosts = [h for h in hosts if not static_reason(h)]
        self._static = {h.name: static_reason(h) for h in hosts if static_reason(h)}
        self._all = frozenset(h.name for h in self._hosts)
        self._cache: dict[
            tuple[frozenset[str], frozenset[str], tuple[str, ...]], tuple[frozenset[str], dict[str, str]]
        ] = {}

    def split(self, demand: VmDemand) -> tuple[frozenset[str], Mapping[str, str]]:
        """(hosts that pass, reason per host that does not); the mapping is shared, copy it."""
        if not demand.pools and not demand.networks and not demand.hostdevs:
            return self._all, self._static
        key = (demand.pools, demand.networks, demand.hostdevs)
        hit = self._cache.get(key)
        if hit is None:
            rejected = dict(self._static)
            for h in self._hosts:
                # With nothing held: what the host could never give, whoever runs there.
                why = reach_reason(h, demand) or (device_reason(h, demand) if demand.hostdevs else "")
                if why:
                    rejected[h.name] = why
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            hit = self._cache[key] = (self._all - rejected.keys(), rejected)
        return hit


def apply_rule(candidates: Set[str], rule: Rule, rejected: dict[str, str]) -> Set[str]:
    """The candidates ``rule`` lets through; the others go into ``rejected``."""
    passing = candidates if rule.allowed is None else candidates & rule.allowed
    if rule.denied:
        passing = passing - rule.denied
    if len(passing) < len(candidates):
        rejected.update(dict.fromkeys(candidates - passing, rule.reason))
    return passing


def free_devices(
    candidates: Set[str],
    ledger: Ledger,
    demand: VmDemand,
    hosts: Mapping[str, HostState],
    rejected: dict[str, str],
) -> Set[str]:
    """The candidates where no VM placed there holds a PCI device ``demand`` needs (or
    one in the same IOMMU group); the others go into ``rejected``. Only hosts where
    some VM holds a device are checked again: the rest passed ``FixedFilters``."""
    if not demand.hostdevs or not ledger.devices:
        return candidates
    taken = {}
    for h in candidates & ledger.devices.keys():
        why = device_reason(hosts[h], demand, ledger.held(h))
        if why:
            taken[h] = why
    if not taken:
        return candidates
    rejected.update(taken)
    return candidates - taken.keys()


def fit_capacity(
    candidates: Set[str], ledger: Ledger, demand: VmDemand, rejected: dict[str, str]
) -> list[str]:
    """The candidates with room for ``demand``; the others go into ``rejected``."""
    free_v, free_m = ledger.free_vcpus, ledger.free_memory_mib
    v, m = demand.vcpus, demand.memory_mib
    fit = [h for h in candidates if free_v[h] >= v and free_m[h] >= m]
    if len(fit) < len(candidates):
        cap_v, cap_m = ledger.cap_vcpus, ledger.cap_memory_mib
        for h in candidates:
            if free_v[h] < v or free_m[h] < m:
                rejected[h] = capacity_reason(
                    free_vcpus=free_v[h],
                    cap_vcpus=cap_v[h],
                    free_memory_mib=free_m[h],
                    cap_memory_mib=cap_m[h],
                    demand=demand,
                )
    return fit
