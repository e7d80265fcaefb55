"""The leader's side of CreateVm: what the cluster state says about each host (alive,
lease, capacity, pools) and the VMs already placed, the placement decision, and
the ``vm`` record that makes it binding.

Capacity and PCI devices are counted from the records (what the leader has
promised), not from what hosts report running, so two creates placed one after the
other always see each other, even before either VM exists. The leader serializes
placements (one lock, which HA restarts take too: ``relocate``), so parallel
creates never break a rule nor take the same capacity or device. The decision
itself is the placement engine's (``zsd.compute.placement``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.hostctl import fingerprint
from zsd.cluster.lease.authority import HostStatus
from zsd.cluster.store import Create, Delete, Update
from zsd.compute import policyrecords
from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Placement, VmDemand
from zsd.compute.placement.policies import Policy, check_policy
from zsd.compute.policyrecords import KIND_POLICY, PolicyRecord
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.settings import PlacementSettings
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.host.pci import PciDevice
from zsd.network import records as netrecords
from zsd.network.nics import KIND_NIC, NicRecord
from zsd.network.records import KIND_PORT_GROUP, KIND_SWITCH
from zsd.v1 import host_pb2, storage_pb2

MiB = 1 << 20
MAINTENANCE_LABEL = "maintenance"
"""A host labelled maintenance=true takes no new VMs (EvacuateHost empties it)."""


def in_maintenance(labels: dict[str, str]) -> bool:
    return labels.get(MAINTENANCE_LABEL) == "true"


DEFAULT_PLACEMENT = PlacementSettings()


@dataclass(frozen=True, kw_only=True)
class Demand:
    name: str
    uid: str
    vcpus: int
    memory_mib: int
    group: str = ""
    pools: frozenset[str] = frozenset()
    """Cluster pools the VM's disks are on (each must be active on the host)."""
    pinned: str = ""
    """A host the VM must run on (its disks are on that host's own storage, or asked for)."""
    ha: bool = False
    hostdevs: tuple[str, ...] = ()
    """Host PCI addresses the VM is given (each host must have them, free)."""
    nics: tuple[str, ...] = ()
    """The network's NICs the VM plugs into (each host must carry their port groups)."""


def hosts(
    control: ClusterControl, records: Sequence[VmRecord], *, hostdevs: Collection[str] = ()
) -> list[HostState]:
    """Every member as placement sees it: liveness from gossip and sanlock, capacity
    from its own report, usage from the records (what the leader has promised).
    ``hostdevs``: the PCI addresses the VM to place asks for; each host comes with the
    reported functions the assignment rules look at for them (see ``_pci_devices``)."""
    spans = _port_groups_by_host(control)
    used: dict[str, tuple[int, int]] = {}
    for r in records:
        cpu, mem = used.get(r.host, (0, 0))
        used[r.host] = (cpu + r.vcpus, mem + r.memory_mib)
    out = []
    for view in control.host_views():
        report = host_pb2.Host.FromString(view.status) if view.status is not None else None
        down = ""
        if report is None:
            down = "has not reported its inventory yet"
        elif report.state not in (host_pb2.Host.READY, host_pb2.Host.DEGRADED):
            down = "is not serving"
        cpu, mem = used.get(view.entry.name, (0, 0))
        out.append(
            HostState(
                name=view.entry.name,
                down=down,
                alive=view.gossip in (None, "alive"),
                lease_live=view.lease in (None, HostStatus.LIVE),
                maintenance=in_maintenance(view.entry.label_dict()),
                cpus=report.cpu.count if report is not None else 0,
                memory_mib=report.memory.total_bytes // MiB if report is not None else 0,
                used_vcpus=cpu,
                used_memory_mib=mem,
                pools=frozenset(
                    p.pool.removeprefix("pools/")
                    for p in (report.pools if report is not None else ())
                    if p.state == storage_pb2.Pool.ACTIVE
                ),
                pci_devices=_pci_devices(report, hostdevs) if hostdevs and report is not None else (),
                networks=spans(view.entry.name),
            )
        )
    return out


def _port_groups_by_host(control: ClusterControl) -> Callable[[str], frozenset[str]]:
    """host -> the port groups (``switch/port_group``) its switches bring there."""
    cache = control.replica.cache
    switches = {s.name: s for s in netrecords.switches(cache.list(KIND_SWITCH))}
    groups = [(g.key, switches.get(g.switch)) for g in netrecords.port_groups(cache.list(KIND_PORT_GROUP))]
    return lambda host: frozenset(key for key, sw in groups if sw is not None and sw.spans(host))


def nic_networks(control: ClusterControl, names: Sequence[str]) -> frozenset[str]:
    """The port groups of the NICs ``names`` (those that exist)."""
    cache = control.replica.cache
    found = (cache.get(KIND_NIC, n) for n in names)
    return frozenset(NicRecord.decode(r.data).port_group for r in found if r is not None)


def _pci_devices(report: host_pb2.Host, wanted: Collection[str]) -> tuple[PciDevice, ...]:
    """The functions of ``report`` that are ``wanted`` or share an IOMMU group with
    one: all the assignment rules look at. Hosts list hundreds of functions, and
    converting them all on 1000 hosts would cost 0.3 s a placement."""
    groups = {d.iommu_group for d in report.pci_devices if d.address in wanted and d.iommu_group >= 0}
    return tuple(_pci_device(d) for d in report.pci_devices if d.address in wanted or d.iommu_group in groups)


def _pci_device(d: host_pb2.PciDevice) -> PciDevice:
    return PciDevice(
        address=d.address,
        vendor=d.vendor,
        device=d.device,
        pci_class=d.pci_class,
        driver=d.driver,
        numa_node=d.numa_node,
        iommu_group=d.iommu_group if d.iommu_group >= 0 else None,
        total_vfs=d.total_vfs,
        num_vfs=d.num_vfs,
        physfn=d.physfn,
    )


def placements(records: Sequence[VmRecord]) -> dict[str, Placement]:
    return {
        r.name: Placement(
            host=r.host, group=r.group, vcpus=r.vcpus, memory_mib=r.memory_mib, hostdevs=r.hostdevs
        )
        for r in records
    }


def choose(
    demand: Demand,
    candidates: Sequence[HostState],
    records: Sequence[VmRecord] = (),
    settings: PlacementSettings = DEFAULT_PLACEMENT,
    policies: Sequence[Policy] = (),
    *,
    networks: frozenset[str] = frozenset(),
) -> str:
    """The host for ``demand`` among ``candidates`` (the placement engine's filters,
    each rejection with its reason, then its weighing and the scheduling policies);
    ``records``: the VMs already placed (their hosts' usage is in ``candidates``; these
    feed the groups). ``networks``: the port groups of the VM's NICs (``nic_networks``)."""
    if demand.pinned:
        pinned = [h for h in candidates if h.name == demand.pinned]
        if not pinned:
            raise NotFound(f"hosts/{demand.pinned} is not a member of this cluster", field="host")
        candidates = pinned
    demand_networks = networks
    engine = Engine(
        hosts=candidates,
        placements=placements(records),
        policies=policies,
        overcommit=settings.overcommit,
        strategy=settings.strategy,
    )
    decision = engine.place(
        VmDemand(
            name=demand.name,
            vcpus=demand.vcpus,
            memory_mib=demand.memory_mib,
            pools=demand.pools,
            group=demand.group,
            hostdevs=demand.hostdevs,
            networks=demand_networks,
        )
    )
    return decision.host


class Scheduler:
    """Leader only."""

    def __init__(
        self,
        control: ClusterControl,
        settings: PlacementSettings = DEFAULT_PLACEMENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._control = control
        self._settings = settings
        self._lock = trio.Lock()
        self._clock = clock

    async def place(self, demand: Demand, *, request_id: str) -> tuple[VmRecord, int]:
        """Chooses a host and commits the VM's record; a retry with the same
        ``request_id`` returns the first decision."""
        store = self._control.store()
        async with self._lock:
            existing = await store.get(KIND_VM, demand.name)
            if existing is not None:
                record = VmRecord.decode(existing.data)
                if record.uid == demand.uid:
                    return record, existing.revision
                raise AlreadyExists(
                    f"VM 'vms/{demand.name}' already exists (on {record.host})",
                    field="vm_id",
                    reason="VM_EXISTS",
                )
            records = self._records()
            self._check_nics(demand, records)
            host = self._choose(demand, records)
            record = VmRecord(
                name=demand.name,
                uid=demand.uid,
                host=host,
                vcpus=demand.vcpus,
                memory_mib=demand.memory_mib,
                group=demand.group,
                pools=tuple(sorted(demand.pools)),
                hostdevs=demand.hostdevs,
                nics=demand.nics,
                ha=demand.ha,
                create_time=self._clock(),
            )
            result = await store.commit(
                [Create(kind=KIND_VM, name=demand.name, data=record.encode())],
                request_id=request_id,
                fingerprint=fingerprint("CreateVm", demand.name, demand.uid),
            )
            # The next placement must count this one: wait for the leader's own copy.
            await self._control.wait_revision(result.revision, 5.0)
            return record, result.revision

    async def relocate(
        self, demand: Demand, *, revision: int, moved: Callable[[str], VmRecord]
    ) -> tuple[VmRecord, int]:
        """Chooses a new host for VM ``demand.name``, already placed, as ``place`` would
        (its own record left out of the count), and commits ``moved(host)`` as its record
        if that is still at ``revision`` (Conflict ETAG_MISMATCH otherwise). Under the
        placement lock, so no create takes the same capacity or device between the
        choice and the commit (HA restarts)."""
        store = self._control.store()
        async with self._lock:
            others = [r for r in self._records() if r.name != demand.name]
            record = moved(self._choose(demand, others))
            result = await store.commit(
                [Update(kind=KIND_VM, name=demand.name, data=record.encode(), expected_revision=revision)]
            )
            await self._control.wait_revision(result.revision, 5.0)
            return record, result.revision

    async def amend(
        self, name: str, change: Callable[[VmRecord, Sequence[VmRecord]], VmRecord | None]
    ) -> tuple[VmRecord, int]:
        """Commits ``change(record, the other records)`` as VM ``name``'s record (None:
        left as it is), under the placement lock, so no create takes what ``change``
        checked between the check and the commit (a NIC hot-plugged into a placed VM).
        Returns the record and the revision it is at. NotFound VM_NOT_FOUND."""
        store = self._control.store()
        async with self._lock:
            stored = await store.get(KIND_VM, name)
            if stored is None:
                raise NotFound(f"VM 'vms/{name}' does not exist", field="name", reason="VM_NOT_FOUND")
            others = [r for r in self._records() if r.name != name]
            record = change(VmRecord.decode(stored.data), others)
            if record is None:
                return VmRecord.decode(stored.data), stored.revision
            # The janitor and HA restarts write VM records outside this lock: the
            # revision makes a record changed meanwhile fail the commit (Conflict
            # ETAG_MISMATCH), never lose that change. They never change NICs, so the
            # others' (this host's copy) are current for the checks.
            result = await store.commit(
                [Update(kind=KIND_VM, name=name, data=record.encode(), expected_revision=stored.revision)]
            )
            await self._control.wait_revision(result.revision, 5.0)
            return record, result.revision

    def _choose(self, demand: Demand, records: Sequence[VmRecord]) -> str:
        candidates = hosts(self._control, records, hostdevs=frozenset(demand.hostdevs))
        networks = nic_networks(self._control, demand.nics)
        return choose(demand, candidates, records, self._settings, self._policies(), networks=networks)

    def _check_nics(self, demand: Demand, records: Sequence[VmRecord]) -> None:
        """Each NIC exists and no other VM has it (under the placement lock, so two
        creates never take one NIC)."""
        users = {nic: r for r in records if r.name != demand.name for nic in r.nics}
        cache = self._control.replica.cache
        for i, nic in enumerate(demand.nics):
            if cache.get(KIND_NIC, nic) is None:
                raise NotFound(
                    f"NIC 'nics/{nic}' does not exist", field=f"vm.nics[{i}].nic", reason="NIC_NOT_FOUND"
                )
            if nic in users:
                raise FailedPrecondition(
                    f"NIC 'nics/{nic}' is in use by VM 'vms/{users[nic].name}'",
                    field=f"vm.nics[{i}].nic",
                    reason="NIC_IN_USE",
                )
            if nic in demand.nics[:i]:
                raise InvalidArgument(f"NIC 'nics/{nic}' is listed twice", field=f"vm.nics[{i}].nic")

    def _records(self) -> list[VmRecord]:
        return [VmRecord.decode(r.data) for r in self._control.replica.cache.list(KIND_VM)]

    def _policies(self) -> list[Policy]:
        return policyrecords.policies(self._control.replica.cache.list(KIND_POLICY))

    async def create_policy(self, record: PolicyRecord, *, request_id: str) -> tuple[PolicyRecord, int]:
        """Checks ``record.policy`` against the others and where its group's VMs run
        now (``check_policy``), then commits it; under the placement lock, so no VM is
        placed between the check and the commit. A retry with the same ``request_id``
        returns the first answer."""
        store = self._control.store()
        fp = fingerprint("CreateSchedulingPolicy", record.policy.name, record.encode())
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                stored = await store.get(KIND_POLICY, record.policy.name)
                if stored is not None:
                    return PolicyRecord.decode(stored.data), replay.revision
            records = self._records()
            check_policy(record.policy, self._policies(), placements(records), hosts(self._control, records))
            record = PolicyRecord(
                policy=record.policy, description=record.description, create_time=self._clock()
            )
            result = await store.commit(
                [Create(kind=KIND_POLICY, name=record.policy.name, data=record.encode())],
                request_id=request_id,
                fingerprint=fp,
            )
            await self._control.wait_revision(result.revision, 5.0)
            return record, result.revision

    async def delete_policy(self, name: str, *, request_id: str) -> int:
        store = self._control.store()
        fp = fingerprint("DeleteSchedulingPolicy", name)
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return replay.revision
            if await store.get(KIND_POLICY, name) is None:
                raise NotFound(
                    f"scheduling policy 'schedulingPolicies/{name}' does not exist",
                    field="name",
                    reason="POLICY_NOT_FOUND",
                )
            result = await store.commit(
                [Delete(kind=KIND_POLICY, name=name)], request_id=request_id, fingerprint=fp
            )
            await self._control.wait_revision(result.revision, 5.0)
            return result.revision
