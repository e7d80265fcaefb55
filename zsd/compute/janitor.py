"""The leader's VM record janitor: a ``vm`` record whose host says, in a report
committed well after the record, that it has no such VM (a create that failed or
was undone after a crash, or a VM deleted there) is removed, so capacity and
names are given back. Level-triggered: it looks at every change and every few
seconds, and only ever acts on what a host reported about itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.records import KIND_HOST_STATUS
from zsd.cluster.store import Delete
from zsd.cluster.store.cache import StateCache
from zsd.compute.records import KIND_VM, VmRecord
from zsd.errors import ZsdError
from zsd.v1 import host_pb2

log = logging.getLogger(__name__)

GRACE = 20.0
"""Seconds a new record is left alone: the chosen host's reports from before it
took the create on may still arrive."""
INTERVAL = 2.0


def stale(cache: StateCache, *, now: float, grace: float = GRACE) -> list[tuple[VmRecord, int]]:
    """Records (with their revisions) that their host's latest report disowns."""
    out = []
    for raw in cache.list(KIND_VM):
        record = VmRecord.decode(raw.data)
        if now - record.create_time < grace:
            continue
        report = cache.get(KIND_HOST_STATUS, record.host)
        if report is None or report.revision <= raw.revision:
            continue
        host = host_pb2.Host.FromString(report.data)
        if any(v.uid == record.uid or (v.creating and v.vm == f"vms/{record.name}") for v in host.vms):
            continue
        out.append((record, raw.revision))
    return out


async def run(control: ClusterControl, *, clock: Callable[[], float] = time.time) -> None:
    """Runs on every member; acts only while this host leads."""
    while True:
        if control.leading:
            for record, revision in stale(control.replica.cache, now=clock()):
                try:
                    await control.store().commit(
                        [Delete(kind=KIND_VM, name=record.name, expected_revision=revision)]
                    )
                    log.info("VM %s is gone from %s: its record is removed", record.name, record.host)
                except ZsdError as e:
                    log.debug("VM record %s not removed now: %s", record.name, e)
        with trio.move_on_after(INTERVAL):
            await control.replica.wait_changed()
