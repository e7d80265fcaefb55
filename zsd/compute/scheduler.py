"""The leader's side of CreateVm: what the cluster state says about each host (alive,
lease, capacity, pools) and the VMs already placed, the placement decision, and
the ``vm`` record that makes it binding.

Capacity is counted from the records (what the leader has promised), not from
what hosts report running, so two creates placed one after the other always see
each other, even before either VM exists. The leader serializes placements (one
lock), so parallel creates never break a rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.hostctl import fingerprint
from zsd.cluster.lease.authority import HostStatus
from zsd.cluster.store import Create
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.settings import Placement
from zsd.errors import AlreadyExists, ResourceExhausted
from zsd.v1 import host_pb2, storage_pb2

MiB = 1 << 20
MAINTENANCE_LABEL = "maintenance"
"""A host labelled maintenance=true takes no new VMs (EvacuateHost empties it)."""


def in_maintenance(labels: dict[str, str]) -> bool:
    return labels.get(MAINTENANCE_LABEL) == "true"


DEFAULT_PLACEMENT = Placement()


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
    """A host the VM must run on (its disks are on that host's own storage)."""
    ha: bool = False


@dataclass(frozen=True, kw_only=True)
class Candidate:
    name: str
    usable: str
    """"" when the host can take VMs at all, else why not."""
    cpus: int
    memory_mib: int
    used_vcpus: int
    used_memory_mib: int
    pools: frozenset[str]


def candidates(control: ClusterControl, records: Sequence[VmRecord]) -> list[Candidate]:
    used: dict[str, tuple[int, int]] = {}
    for r in records:
        cpu, mem = used.get(r.host, (0, 0))
        used[r.host] = (cpu + r.vcpus, mem + r.memory_mib)
    out = []
    for view in control.host_views():
        name = view.entry.name
        host = host_pb2.Host.FromString(view.status) if view.status is not None else None
        why = ""
        if in_maintenance(view.entry.label_dict()):
            why = "in maintenance"
        elif host is None:
            why = "has not reported its inventory yet"
        elif view.gossip not in (None, "alive"):
            why = f"gossip says {view.gossip}"
        elif view.lease not in (None, HostStatus.LIVE):
            why = f"its sanlock lease is {view.lease.value if view.lease else 'unknown'}"
        elif host.state not in (host_pb2.Host.READY, host_pb2.Host.DEGRADED):
            why = "is not serving"
        pools = frozenset(
            p.pool.removeprefix("pools/")
            for p in (host.pools if host is not None else ())
            if p.state == storage_pb2.Pool.ACTIVE
        )
        cpu, mem = used.get(name, (0, 0))
        out.append(
            Candidate(
                name=name,
                usable=why,
                cpus=host.cpu.count if host is not None else 0,
                memory_mib=host.memory.total_bytes // MiB if host is not None else 0,
                used_vcpus=cpu,
                used_memory_mib=mem,
                pools=pools,
            )
        )
    return out


def choose(demand: Demand, hosts: Sequence[Candidate], settings: Placement = DEFAULT_PLACEMENT) -> str:
    """The host for ``demand``: filters (each rejection with its reason), then
    weighing by free memory (most with spread, least with pack)."""
    reasons: dict[str, str] = {}
    fit: list[tuple[float, str]] = []
    for h in hosts:
        why = h.usable
        if not why and demand.pinned and h.name != demand.pinned:
            why = f"the VM's disks are on {demand.pinned}'s own storage"
        if not why and not demand.pools <= h.pools:
            why = f"pool(s) {', '.join(sorted(demand.pools - h.pools))} not active there"
        free_cpu = int(h.cpus * settings.cpu_overcommit) - h.used_vcpus
        free_mem = int(h.memory_mib * settings.memory_overcommit) - h.used_memory_mib
        if not why and free_cpu < demand.vcpus:
            why = f"{free_cpu} vCPUs free (needs {demand.vcpus})"
        if not why and free_mem < demand.memory_mib:
            why = f"{free_mem} MiB free (needs {demand.memory_mib})"
        if why:
            reasons[h.name] = why
        else:
            fit.append((free_mem / max(h.memory_mib, 1), h.name))
    if not fit:
        detail = "; ".join(f"{n}: {w}" for n, w in sorted(reasons.items())) or "the cluster has no hosts"
        raise ResourceExhausted(
            f"no host can run VM {demand.name}: {detail}", reason="NO_VALID_HOST", metadata=reasons
        )
    if settings.strategy == "pack":
        return min(fit, key=lambda x: (x[0], x[1]))[1]
    return max(fit, key=lambda x: (x[0], x[1]))[1]


class Scheduler:
    """Leader only."""

    def __init__(
        self,
        control: ClusterControl,
        settings: Placement = DEFAULT_PLACEMENT,
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
            records = [VmRecord.decode(r.data) for r in self._control.replica.cache.list(KIND_VM)]
            host = choose(demand, candidates(self._control, records), self._settings)
            record = VmRecord(
                name=demand.name,
                uid=demand.uid,
                host=host,
                vcpus=demand.vcpus,
                memory_mib=demand.memory_mib,
                group=demand.group,
                pools=tuple(sorted(demand.pools)),
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
