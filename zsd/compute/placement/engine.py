"""The placement engine: filters, then weighers, over state it keeps up to date itself.

The leader builds one ``Engine`` from the hosts, the VMs already placed and the
policies, and then only tells it what changes: each ``place`` records its decision, so
the next one sees it, and ``release`` forgets a VM that was deleted (or whose record
could not be committed). When hosts or policies change, build a new engine; that is
one pass over the placements.

The engine is not thread-safe and needs no lock of its own: the leader already
serializes placements, which is also what lets a batch of parallel creates keep every
mandatory rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from types import MappingProxyType

from zsd.compute.placement import filters, weighers
from zsd.compute.placement.ledger import Ledger
from zsd.compute.placement.model import (
    STRATEGIES,
    Decision,
    HostState,
    Overcommit,
    Placement,
    Strategy,
    VmDemand,
    validate_demand,
)
from zsd.compute.placement.policies import Policy, preference, rule
from zsd.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, ZsdError


class Engine:
    def __init__(
        self,
        *,
        hosts: Sequence[HostState],
        placements: Mapping[str, Placement] | None = None,
        policies: Iterable[Policy] = (),
        overcommit: Overcommit | None = None,
        strategy: Strategy = "spread",
    ) -> None:
        """Policies are trusted to have passed ``check_policy``; only the one-policy-per-
        group invariant the engine relies on is checked again here."""
        if strategy not in STRATEGIES:
            raise InvalidArgument(
                f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}", field="strategy"
            )
        names = sorted(h.name for h in hosts)
        if len(set(names)) != len(names):
            raise InvalidArgument("host names must be unique", field="hosts")
        self._policies: dict[str, Policy] = {}
        for p in policies:
            if p.vm_group in self._policies:
                raise InvalidArgument(f"group '{p.vm_group}' has two policies", field="policies")
            self._policies[p.vm_group] = p
        self._strategy = strategy
        self._rank = {name: i for i, name in enumerate(names)}
        self._hosts = {h.name: h for h in hosts}
        self._fixed = filters.FixedFilters(hosts)
        self._ledger = Ledger(hosts, placements or {}, overcommit or Overcommit())
        self._keys = {name: self._key(name) for name in names}

    @property
    def placements(self) -> Mapping[str, Placement]:
        return MappingProxyType(self._ledger.placements)

    @property
    def policies(self) -> Mapping[str, Policy]:
        """By VM scheduling group."""
        return MappingProxyType(self._policies)

    def group_hosts(self, group: str) -> Mapping[str, int]:
        """Host -> number of ``group``'s VMs there (hosts with none are absent)."""
        return MappingProxyType(dict(self._ledger.members_by_host(group)))

    def free(self, host: str) -> tuple[int, int]:
        """(vCPUs, MiB) still free on ``host`` under the overcommit ratios."""
        if host not in self._ledger.free_vcpus:
            raise NotFound(f"no host '{host}'", field="host", reason="HOST_NOT_FOUND")
        return self._ledger.free_vcpus[host], self._ledger.free_memory_mib[host]

    def place(self, demand: VmDemand) -> Decision:
        """Chooses a host for ``demand`` and records it. ResourceExhausted NO_VALID_HOST,
        naming every host and why it was rejected, when none fits."""
        validate_demand(demand)
        if demand.name in self._ledger.placements:
            raise AlreadyExists(
                f"VM '{demand.name}' is already placed on {self._ledger.placements[demand.name].host}",
                field="vm.name",
                reason="VM_EXISTS",
            )
        candidates: Set[str]
        candidates, fixed_rejects = self._fixed.split(demand)
        rejected = dict(fixed_rejects)
        candidates = filters.free_devices(candidates, self._ledger, demand, self._hosts, rejected)
        bonus: Mapping[str, int] = {}
        policy = self._policies.get(demand.group) if demand.group else None
        if policy is not None:
            members = self._ledger.members_by_host(demand.group)
            mandatory = rule(policy, members)
            if mandatory is not None:
                candidates = filters.apply_rule(candidates, mandatory, rejected)
            bonus = preference(policy, members)
        fit = filters.fit_capacity(candidates, self._ledger, demand, rejected)
        if not fit:
            raise _no_valid_host(demand, rejected)
        host = weighers.choose(fit, self._keys, bonus)
        self._ledger.add(
            demand.name,
            Placement(
                host=host,
                group=demand.group,
                vcpus=demand.vcpus,
                memory_mib=demand.memory_mib,
                hostdevs=demand.hostdevs,
            ),
        )
        self._keys[host] = self._key(host)
        return Decision(vm=demand.name, host=host, rejected=MappingProxyType(rejected))

    def place_many(self, demands: Sequence[VmDemand]) -> list[Decision]:
        """Places ``demands`` in order, each seeing the ones before; all or nothing: when
        one cannot be placed, none stays placed and the error names that VM."""
        seen: set[str] = set()
        for i, d in enumerate(demands):
            if d.name in seen:
                raise InvalidArgument(f"VM '{d.name}' appears twice in the batch", field=f"vms[{i}].name")
            seen.add(d.name)
        decisions: list[Decision] = []
        try:
            for d in demands:
                decisions.append(self.place(d))
        except ZsdError as e:
            for done in reversed(decisions):
                self.release(done.vm)
            failed = demands[len(decisions)]
            raise type(e)(
                f"none of the {len(demands)} VMs was placed: VM '{failed.name}' "
                f"({len(decisions) + 1} of {len(demands)}) could not be: {e.message}",
                reason=e.reason,
                field=e.field,
                metadata=e.metadata,
            ) from e
        return decisions

    def release(self, vm: str) -> Placement:
        """Forgets ``vm``'s placement, giving its capacity back."""
        try:
            placement = self._ledger.remove(vm)
        except KeyError:
            raise NotFound(f"VM '{vm}' is not placed", field="vm.name", reason="VM_NOT_FOUND") from None
        if placement.host in self._keys:
            self._keys[placement.host] = self._key(placement.host)
        return placement

    def _key(self, host: str) -> weighers.Key:
        ledger = self._ledger
        return weighers.host_key(
            self._strategy,
            rank=self._rank[host],
            free_vcpus=ledger.free_vcpus[host],
            cap_vcpus=ledger.cap_vcpus[host],
            free_memory_mib=ledger.free_memory_mib[host],
            cap_memory_mib=ledger.cap_memory_mib[host],
        )


def _no_valid_host(demand: VmDemand, rejected: Mapping[str, str]) -> ResourceExhausted:
    detail = "; ".join(f"{h}: {why}" for h, why in sorted(rejected.items())) or "the cluster has no hosts"
    devices = f", PCI {' '.join(demand.hostdevs)}" if demand.hostdevs else ""
    return ResourceExhausted(
        f"no host can run VM '{demand.name}' ({demand.vcpus} vCPUs, {demand.memory_mib} MiB{devices}): "
        f"{detail}",
        reason="NO_VALID_HOST",
        metadata=rejected,
    )
