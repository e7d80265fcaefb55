"""This host's side of HA (``zsd.compute.ha``): VMs the leader restarted here are
defined from the spec in their record and started; the stale copy of a VM that was
restarted elsewhere while this host was dead is forgotten when this host is back.

Both follow the records, so they are level-triggered and idempotent: a zsd restarted
half-way does the rest. Forgetting a stale copy only undefines a domain that is not
running (its disks are the VM's, now used elsewhere, and are never touched; its UEFI
variables stay on this host).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from zsd.cluster.control import ClusterControl
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.runtime import LocalVms, VmStatus
from zsd.compute.spec import VmSpec
from zsd.errors import ZsdError

log = logging.getLogger(__name__)

INTERVAL = 3.0
_STOPPED = ("stopped", "crashed")


@dataclass(frozen=True, kw_only=True)
class Work:
    define: tuple[VmRecord, ...] = ()
    """Restarted here, not defined here yet."""
    start: tuple[str, ...] = ()
    """Restarted here to run, defined but stopped (an earlier start failed)."""
    forget: tuple[VmStatus, ...] = ()
    """Stale copies of VMs restarted elsewhere from this host."""


def work(
    host: str,
    records: Iterable[VmRecord],
    local: Sequence[VmStatus],
    creating: Iterable[str],
    started: set[str],
) -> Work:
    """What to do now; ``started``: uids this process already started once (a VM the
    user stops after its restart is not started again)."""
    here = {s.spec.uid: s for s in local}
    busy = set(creating)
    define, start, forget = [], [], []
    by_name: dict[str, VmRecord] = {}
    for r in records:
        by_name[r.name] = r
        if r.host != host or not r.restart or r.name in busy:
            continue
        status = here.get(r.uid)
        if status is None:
            define.append(r)
        elif r.restart_running and r.uid not in started and status.state in _STOPPED:
            start.append(r.name)
    for s in local:
        owner = by_name.get(s.spec.name)
        stale = (
            owner is not None
            and owner.uid == s.spec.uid
            and owner.host != host
            and owner.restarted_from == host
        )
        if stale and s.state in _STOPPED:
            forget.append(s)
    return Work(define=tuple(define), start=tuple(start), forget=tuple(forget))


async def run(
    control: ClusterControl, vms: LocalVms, host: str, creating: Callable[[], Iterable[str]]
) -> None:
    """``creating``: the VMs being created here right now (left alone)."""
    started: set[str] = set()
    while True:
        records = [VmRecord.decode(r.data) for r in control.replica.cache.list(KIND_VM)]
        todo = work(host, records, vms.summary, creating(), started)
        for record in todo.define:
            await _define(vms, record, started)
        for name in todo.start:
            record = next(r for r in records if r.name == name)
            await _start(vms, record, started)
        for stale in todo.forget:
            try:
                if await vms.forget(stale.spec.name, uid=stale.spec.uid):
                    log.warning(
                        "VM %s runs on another host since this one died: local copy removed", stale.spec.name
                    )
            except ZsdError as e:
                log.warning("stale copy of VM %s not removed now: %s", stale.spec.name, e)
        with trio.move_on_after(INTERVAL):
            await control.replica.wait_changed()


async def _define(vms: LocalVms, record: VmRecord, started: set[str]) -> None:
    try:
        spec = VmSpec.from_json(record.restart)
    except (ValueError, TypeError, KeyError):
        log.exception("VM %s: the spec in its HA restart is unreadable; not restarted", record.name)
        return
    try:
        await vms.create(spec, start=False)
    except ZsdError as e:
        log.warning(
            "VM %s (HA restart from %s) not defined here yet: %s", record.name, record.restarted_from, e
        )
        return
    log.warning("VM %s defined here (HA restart from %s)", record.name, record.restarted_from)
    if record.restart_running:
        await _start(vms, record, started)


async def _start(vms: LocalVms, record: VmRecord, started: set[str]) -> None:
    try:
        await vms.start(record.name)
    except ZsdError as e:
        # Its lease may still be held (libvirt refuses the start): retried next round.
        log.warning("VM %s (HA restart) not started yet: %s", record.name, e)
        return
    started.add(record.uid)
    log.warning("VM %s started here (HA restart from %s)", record.name, record.restarted_from)
