"""The compute subsystem of the daemon: this host's libvirt connection, its VMs
with their storage, and the task that turns libvirt's lifecycle events into state
changes. libvirtd being down at start is not fatal: VM calls answer UNAVAILABLE
until it is back (the connection is opened on first use)."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from zsd.compute.designer import HostTraits
from zsd.compute.hostvms import HostVms
from zsd.compute.hypervisor import Hypervisor
from zsd.compute.intents import IntentLog
from zsd.compute.runtime import LocalVms
from zsd.compute.vmlease import VmLeases
from zsd.errors import ZsdError
from zsd.paths import Paths
from zsd.storage.host import StorageHost

log = logging.getLogger(__name__)
RETRY = 5.0


async def _recover(vms: HostVms, uri: str) -> None:
    """Adopts what libvirt runs and undoes creates a killed zsd left unfinished;
    retried until libvirtd answers."""
    while True:
        try:
            adopted = await vms.vms.adopt()
            undone = await vms.recover()
        except ZsdError as e:
            log.warning("libvirt at %s is not available (%s); VM calls will retry", uri, e)
            await trio.sleep(RETRY)
            continue
        log.info(
            "libvirt at %s: %d zsd VM(s) adopted as they are; %d unfinished create(s) undone",
            uri,
            len(adopted),
            len(undone),
        )
        return


async def run_compute(
    *,
    uri: str,
    domain_type: str,
    paths: Paths,
    storage: StorageHost,
    leases: VmLeases | None = None,
    pki_dir: Path | None = None,
    task_status: trio.TaskStatus[HostVms] = trio.TASK_STATUS_IGNORED,
) -> None:
    hypervisor = Hypervisor(uri)
    traits = HostTraits(domain_type=domain_type, console_dir=paths.console_dir, nvram_dir=paths.nvram_dir)
    # Made now, not at the first create: a VM migrating in is the first on some hosts,
    # and its QEMU opens its console log here.
    for directory in (traits.console_dir, traits.nvram_dir):
        directory.mkdir(parents=True, exist_ok=True)
    vms = LocalVms(hypervisor, traits, pki_dir=pki_dir)
    host_vms = HostVms(
        vms=vms,
        storage=storage,
        intents=IntentLog(paths.state_dir / "compute" / "creating"),
        leases=leases,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(vms.follow_events)
            nursery.start_soon(vms.keep_summary)
            nursery.start_soon(_recover, host_vms, uri)
            task_status.started(host_vms)
    finally:
        with trio.CancelScope(shield=True):
            await hypervisor.aclose()
