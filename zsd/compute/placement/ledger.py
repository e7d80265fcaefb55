"""The engine's bookkeeping: free capacity per host, which hosts each VM scheduling
group runs on and which VM holds each host's PCI devices, all changed incrementally
by every placement and release so that no placement ever rescans all VMs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from zsd.compute.placement.model import HostState, Overcommit, Placement

_NONE: Mapping[str, int] = MappingProxyType({})
_NO_DEVICES: Mapping[str, str] = MappingProxyType({})


class Ledger:
    def __init__(
        self, hosts: Sequence[HostState], placements: Mapping[str, Placement], overcommit: Overcommit
    ) -> None:
        self.cap_vcpus = {h.name: overcommit.vcpus(h.cpus) for h in hosts}
        self.cap_memory_mib = {h.name: overcommit.memory_mib(h.memory_mib) for h in hosts}
        # HostState.used_* already counts the given placements: they only feed the index.
        self.free_vcpus = {h.name: self.cap_vcpus[h.name] - h.used_vcpus for h in hosts}
        self.free_memory_mib = {h.name: self.cap_memory_mib[h.name] - h.used_memory_mib for h in hosts}
        self.placements: dict[str, Placement] = {}
        # group -> host -> number of the group's VMs there; a host leaves when it hits 0,
        # so the keys are exactly the hosts the group runs on.
        self.groups: dict[str, dict[str, int]] = {}
        # host -> PCI address -> the VMs that hold it, first come first (more than one
        # only when records placed without the device check disagree); hosts with none
        # are absent.
        self.devices: dict[str, dict[str, list[str]]] = {}
        for vm, p in placements.items():
            self._index(vm, p)

    def members_by_host(self, group: str) -> Mapping[str, int]:
        return self.groups.get(group, _NONE)

    def held(self, host: str) -> Mapping[str, str]:
        """PCI address -> the VM placed on ``host`` that holds it."""
        devices = self.devices.get(host)
        if devices is None:
            return _NO_DEVICES
        return {address: vms[0] for address, vms in devices.items()}

    def add(self, vm: str, placement: Placement) -> None:
        self._index(vm, placement)
        if placement.host in self.free_vcpus:
            self.free_vcpus[placement.host] -= placement.vcpus
            self.free_memory_mib[placement.host] -= placement.memory_mib

    def remove(self, vm: str) -> Placement:
        """KeyError when ``vm`` is not placed."""
        placement = self.placements.pop(vm)
        if placement.group:
            counts = self.groups[placement.group]
            counts[placement.host] -= 1
            if not counts[placement.host]:
                del counts[placement.host]
                if not counts:
                    del self.groups[placement.group]
        if placement.hostdevs:
            devices = self.devices[placement.host]
            for address in placement.hostdevs:
                devices[address].remove(vm)
                if not devices[address]:
                    del devices[address]
            if not devices:
                del self.devices[placement.host]
        if placement.host in self.free_vcpus:
            self.free_vcpus[placement.host] += placement.vcpus
            self.free_memory_mib[placement.host] += placement.memory_mib
        return placement

    def _index(self, vm: str, placement: Placement) -> None:
        self.placements[vm] = placement
        if placement.group:
            counts = self.groups.setdefault(placement.group, {})
            counts[placement.host] = counts.get(placement.host, 0) + 1
        if placement.hostdevs:
            devices = self.devices.setdefault(placement.host, {})
            for address in placement.hostdevs:
                devices.setdefault(address, []).append(vm)
