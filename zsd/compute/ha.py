"""HA on the leader: the HA VMs of a dead host are restarted elsewhere.

A host is dead only when sanlock says its host lease expired (``liveness.verdict``):
gossip alone is never enough, since a partitioned host may still run its VMs. By
then the dead host's lease holders are gone (sanlock kills them, or the watchdog
resets the host), so each VM's own lease, which libvirt holds for QEMU, is free.
The restart is declarative: the leader moves the VM's record to the host placement
chooses, with the spec the dead host last reported for the VM; that host defines
the VM from it and starts it (``restore``), and libvirt's start takes the VM lease
first, so even a wrong verdict cannot run one VM on two hosts. The choice and the
move are one step under the placement lock (``Scheduler.relocate``), so a create
placed at the same time never takes the capacity or PCI devices a restart counted
on, nor does the next restart of the same round.

VMs without a lease (the host's libvirt has no sanlock lock manager) are not
restarted: nothing would stop a host that only lost its storage from running them
still. Neither are VMs whose spec never reached the cluster (the host died before
its first report of them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import trio

from zsd.cluster.control import ClusterControl, HostView
from zsd.cluster.liveness import Liveness, verdict
from zsd.cluster.swim.member import MemberState
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import Demand, Scheduler
from zsd.errors import ZsdError
from zsd.v1 import compute_pb2, host_pb2

log = logging.getLogger(__name__)

INTERVAL = 2.0
_RUNNING = (compute_pb2.Vm.RUNNING, compute_pb2.Vm.PAUSED, compute_pb2.Vm.STOPPING)


@dataclass(frozen=True, kw_only=True)
class Restart:
    record: VmRecord
    revision: int
    spec: str
    """The VM's spec as its dead host last reported it."""
    running: bool
    hostdevs: tuple[str, ...] = ()
    """The host PCI devices ``spec`` gives the VM (the new host must have them free)."""


@dataclass(frozen=True, kw_only=True)
class Skipped:
    vm: str
    why: str


def dead(view: HostView) -> bool:
    gossip = MemberState[view.gossip.upper()] if view.gossip else None
    return verdict(gossip, view.lease) is Liveness.DEAD


def plan(
    views: Sequence[HostView], records: Sequence[tuple[VmRecord, int]]
) -> tuple[list[Restart], list[Skipped]]:
    """The HA VMs to restart (the records of dead hosts, with their reported specs),
    and the HA VMs of dead hosts that cannot be, with why. ``records``: (record,
    revision) of every VM."""
    reports = {
        v.entry.name: host_pb2.Host.FromString(v.status) for v in views if dead(v) and v.status is not None
    }
    gone = {v.entry.name for v in views if dead(v)}
    restarts, skipped = [], []
    for record, revision in records:
        if not record.ha or record.host not in gone:
            continue
        report = reports.get(record.host)
        reported = next((vm for vm in report.vms if vm.uid == record.uid), None) if report else None
        if reported is None or not reported.ha_spec:
            skipped.append(Skipped(vm=record.name, why=f"{record.host} never reported its spec"))
            continue
        spec = json.loads(reported.ha_spec)
        if not spec.get("lease_path"):
            skipped.append(Skipped(vm=record.name, why="it has no VM lease (no sanlock lock manager)"))
            continue
        restarts.append(
            Restart(
                record=record,
                revision=revision,
                spec=reported.ha_spec,
                running=reported.state in _RUNNING,
                hostdevs=tuple(str(a) for a in spec.get("hostdevs", ())),
            )
        )
    return restarts, skipped


def demand(restart: Restart) -> Demand:
    """What placement is asked for the VM (the dead host fails its filters)."""
    r = restart.record
    return Demand(
        name=r.name,
        uid=r.uid,
        vcpus=r.vcpus,
        memory_mib=r.memory_mib,
        group=r.group,
        pools=frozenset(r.pools),
        ha=True,
        hostdevs=restart.hostdevs,
        nics=r.nics,
    )


async def run(
    control: ClusterControl, scheduler: Scheduler, *, clock: Callable[[], float] = time.time
) -> None:
    """Runs on every member; acts only while this host leads. ``scheduler``: the one
    CreateVm places with (its lock is what keeps the two apart)."""
    told: set[tuple[str, str]] = set()
    while True:
        if control.leading:
            cache = control.replica.cache
            raw = cache.list(KIND_VM)
            records = [(VmRecord.decode(r.data), r.revision) for r in raw]
            restarts, skipped = plan(control.host_views(), records)
            for s in skipped:
                if (s.vm, s.why) not in told:  # once per reason, not every round
                    told.add((s.vm, s.why))
                    log.warning("HA VM %s is not restarted: %s", s.vm, s.why)
            for restart in restarts:
                why = await _restart(scheduler, restart, clock)
                if why and (restart.record.name, why) not in told:
                    told.add((restart.record.name, why))
                    log.warning(
                        "HA VM %s (on dead host %s) cannot be restarted now: %s",
                        restart.record.name,
                        restart.record.host,
                        why,
                    )
        with trio.move_on_after(INTERVAL):
            await control.replica.wait_changed()


async def _restart(scheduler: Scheduler, restart: Restart, clock: Callable[[], float]) -> str:
    """Moves the record; "" when done, else why not (retried next round)."""
    r = restart.record

    def moved(host: str) -> VmRecord:
        return replace(
            r,
            host=host,
            hostdevs=restart.hostdevs,
            restart=restart.spec,
            restart_running=restart.running,
            restarted_from=r.host,
            restart_time=clock(),
        )

    try:
        record, _ = await scheduler.relocate(demand(restart), revision=restart.revision, moved=moved)
    except ZsdError as e:
        return str(e)
    log.warning("HA VM %s: host %s is dead; restarting it on %s", r.name, r.host, record.host)
    return ""
