"""The leader's VM record janitor: a ``vm`` record whose host says, in a report
committed after the record, that it has no such VM follows the VM to the one
other host that reports it (a migration), or, when none does and the record is
old enough, is removed (a create that failed or was undone after a crash, a VM
deleted there), so capacity and names are given back. Level-triggered: it looks at every change and every few
seconds, and only ever acts on what a host reported about itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.records import KIND_HOST_STATUS
from zsd.cluster.store import Delete, Mutation, Update
from zsd.cluster.store.cache import StateCache
from zsd.compute.records import KIND_VM, VmRecord
from zsd.errors import ZsdError
from zsd.v1 import host_pb2

log = logging.getLogger(__name__)

GRACE = 20.0
"""Seconds a new (or HA-restarted) record is left alone: the chosen host's reports
from before it took the VM on may still arrive."""
INTERVAL = 2.0


@dataclass(frozen=True, kw_only=True)
class Fix:
    record: VmRecord
    revision: int
    moved_to: str = ""
    """The host that now reports the VM (a migration or restart elsewhere); "" = gone."""


def stale(cache: StateCache, *, now: float, grace: float = GRACE) -> list[Fix]:
    """Records their host's latest report disowns: moved where exactly one other
    host reports the VM, removed where none does (once past ``grace``)."""
    # Each report decoded once: host -> (its revision, the VMs it lists).
    reports = {
        r.name: (r.revision, host_pb2.Host.FromString(r.data).vms) for r in cache.list(KIND_HOST_STATUS)
    }
    reported: dict[str, list[str]] = {}
    for name, (_, vms) in reports.items():
        for vm in vms:
            if vm.uid:
                reported.setdefault(vm.uid, []).append(name)
    out = []
    for raw in cache.list(KIND_VM):
        record = VmRecord.decode(raw.data)
        report = reports.get(record.host)
        if report is None or report[0] <= raw.revision:
            continue
        if any(v.uid == record.uid or (v.creating and v.vm == f"vms/{record.name}") for v in report[1]):
            continue
        elsewhere = [h for h in reported.get(record.uid, []) if h != record.host]
        if len(elsewhere) == 1:
            out.append(Fix(record=record, revision=raw.revision, moved_to=elsewhere[0]))
        elif not elsewhere and now - max(record.create_time, record.restart_time) >= grace:
            out.append(Fix(record=record, revision=raw.revision))
    return out


def _mutation(fix: Fix) -> Mutation:
    if fix.moved_to:
        moved = replace(fix.record, host=fix.moved_to)
        return Update(kind=KIND_VM, name=moved.name, data=moved.encode(), expected_revision=fix.revision)
    return Delete(kind=KIND_VM, name=fix.record.name, expected_revision=fix.revision)


async def run(control: ClusterControl, *, clock: Callable[[], float] = time.time) -> None:
    """Runs on every member; acts only while this host leads."""
    while True:
        if control.leading:
            for fix in stale(control.replica.cache, now=clock()):
                try:
                    await control.store().commit([_mutation(fix)])
                    log.info(
                        "VM %s: %s",
                        fix.record.name,
                        f"now on {fix.moved_to}"
                        if fix.moved_to
                        else f"gone from {fix.record.host}; record removed",
                    )
                except ZsdError as e:
                    log.debug("VM record %s not changed now: %s", fix.record.name, e)
        with trio.move_on_after(INTERVAL):
            await control.replica.wait_changed()
