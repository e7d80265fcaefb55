"""This host's VMs on libvirt: lifecycle, offline updates, hot-plug, live QoS,
console, display, and re-adoption of running domains after a zsd restart.

Every domain zsd makes is persistent and carries zsd's facts in its <metadata>;
domains without them are not zsd's and are never touched. A restarted zsd only
reads (``adopt``): running guests keep running.

Nothing is left half-made: a create whose start fails undefines the domain it
just defined (the volumes are the caller's, never deleted here).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import libvirt
import trio

from zsd.cluster import libvirtpki
from zsd.compute import designer, metadata
from zsd.compute.hypervisor import DomainEvent, Hypervisor
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec, validate, validate_disk, validate_nic
from zsd.errors import AlreadyExists, FailedPrecondition, NotFound, ZsdError
from zsd.storage import validate as storage_validate
from zsd.storage.model import Qos
from zsd.storage.qos import iotune_params

log = logging.getLogger(__name__)

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # idle vCPUs: running as far as anyone cares
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
_ACPI = libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
_POLL = 0.2
_DEBOUNCE = 0.1


@dataclass(frozen=True, kw_only=True)
class VmStatus:
    spec: VmSpec
    state: str
    generation: int


@dataclass(frozen=True, kw_only=True)
class Display:
    kind: str
    address: str
    port: int


def supports_direct_io(path: str) -> bool:
    """Whether O_DIRECT works on ``path``'s filesystem (tmpfs refuses it)."""
    directory = Path(path).parent
    probe = directory / f".zsd-odirect-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError as e:
        return e.errno not in (errno.EINVAL, errno.EOPNOTSUPP)
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


class LocalVms:
    def __init__(
        self, hypervisor: Hypervisor, traits: designer.HostTraits, *, pki_dir: Path | None = None
    ) -> None:
        """``pki_dir``: this host's certificates in libvirt's layout, named in qemu+tls
        migration URIs (the cluster's TLS)."""
        self._pki_dir = pki_dir
        self._hv = hypervisor
        self._traits = traits
        self._changed = trio.Event()
        self._locks: dict[str, trio.Lock] = {}
        self.summary: tuple[VmStatus, ...] = ()
        """Every zsd VM on this host as last read (see ``keep_summary``)."""

    # -- events ----------------------------------------------------------------

    async def follow_events(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wakes waiters on every lifecycle event (a guest's own shutdown included)."""
        task_status.started()
        async for event in self._hv.events:
            self._note(event)

    async def keep_summary(self, *, resync: float = 10.0) -> None:
        """Keeps ``summary`` (every zsd VM here with its state) current: re-read after
        each burst of events, and every ``resync`` seconds in case one was missed."""
        while True:
            changed = self._changed
            try:
                self.summary = await self.adopt()
            except ZsdError as e:
                log.debug("VM summary not refreshed: %s", e)
            with trio.move_on_after(resync):
                await changed.wait()
            await trio.sleep(_DEBOUNCE)

    def _note(self, event: DomainEvent) -> None:
        log.debug("domain %s %s (%s)", event.name, event.event, event.detail)
        self._changed.set()
        self._changed = trio.Event()

    def _lock(self, name: str) -> trio.Lock:
        return self._locks.setdefault(name, trio.Lock())

    # -- reads -----------------------------------------------------------------

    async def adopt(self) -> tuple[VmStatus, ...]:
        """Every zsd domain libvirt has, running or not, read without changing anything."""

        def read(conn: Any) -> list[VmStatus]:
            found = []
            for dom in conn.listAllDomains(0):
                facts = metadata.read(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                if facts is None:
                    continue
                found.append(
                    VmStatus(
                        spec=facts.spec,
                        state=STATES.get(dom.state()[0], "unknown"),
                        generation=facts.generation,
                    )
                )
            return found

        vms = await self._hv.call("listing domains", read)
        return tuple(sorted(vms, key=lambda v: v.spec.name))

    async def status(self, name: str) -> VmStatus:
        def read(conn: Any) -> VmStatus:
            dom = conn.lookupByName(name)
            facts = metadata.read(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if facts is None:
                raise NotFound(f"domain {name!r} exists but is not a zsd VM", reason="NOT_A_ZSD_VM")
            return VmStatus(
                spec=facts.spec, state=STATES.get(dom.state()[0], "unknown"), generation=facts.generation
            )

        return await self._hv.call(f"reading VM {name}", read)

    async def state(self, name: str) -> str:
        return await self._hv.call(
            f"reading VM {name}", lambda c: STATES.get(c.lookupByName(name).state()[0], "unknown")
        )

    async def wait_state(self, name: str, states: tuple[str, ...], *, timeout: float) -> str:
        """Waits until the VM is in one of ``states`` (events wake it; a slow poll backs
        them up); returns the state, or the last one seen when ``timeout`` passes."""
        with trio.move_on_after(timeout):
            while True:
                changed = self._changed
                current = await self.state(name)
                if current in states:
                    return current
                with trio.move_on_after(_POLL):
                    await changed.wait()
        return await self.state(name)

    # -- lifecycle -------------------------------------------------------------

    def domain_xml(self, spec: VmSpec, *, generation: int = 1) -> str:
        return designer.design(
            spec, self._traits, direct_io=supports_direct_io, generation=generation
        ).to_xml()

    async def create(self, spec: VmSpec, *, start: bool = True) -> VmStatus:
        """Defines the VM (and starts it); on any failure nothing of it remains."""
        validate(spec)
        for i, disk in enumerate(spec.disks):
            if not Path(disk.path).exists():
                raise NotFound(
                    f"volume file {disk.path} does not exist",
                    field=f"vm.disks[{i}].path",
                    reason="VOLUME_NOT_FOUND",
                )
        self._traits.console_dir.mkdir(parents=True, exist_ok=True)
        self._traits.nvram_dir.mkdir(parents=True, exist_ok=True)
        spec = spec.with_disks(designer.assign_targets(spec.disks))
        xml = self.domain_xml(spec)
        async with self._lock(spec.name):

            def define(conn: Any) -> None:
                for clash in (self._lookup(conn, name=spec.name), self._lookup(conn, uuid=spec.uid)):
                    if clash is not None:
                        raise AlreadyExists(
                            f"a domain named {clash.name()!r} (uuid {clash.UUIDString()}) exists here",
                            field="vm.name",
                            reason="VM_EXISTS",
                        )
                conn.defineXML(xml)

            await self._hv.call(f"defining VM {spec.name}", define)
            if start:
                try:
                    await self._hv.call(
                        f"starting VM {spec.name}", lambda c: c.lookupByName(spec.name).create()
                    )
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self._undefine(spec.name)
                    raise
        return await self.status(spec.name)

    @staticmethod
    def _lookup(conn: Any, *, name: str = "", uuid: str = "") -> Any:
        try:
            return conn.lookupByName(name) if name else conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    async def remove_if(self, name: str, *, uid: str) -> bool:
        """Powers off and undefines the domain ``name`` only if it is the VM ``uid``
        (an unfinished create being undone); True if there was one."""

        def remove(conn: Any) -> bool:
            dom = self._lookup(conn, name=name)
            if dom is None or dom.UUIDString() != uid:
                return False
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            return True

        async with self._lock(name):
            return await self._hv.call(f"removing VM {name}", remove)

    async def forget(self, name: str, *, uid: str) -> bool:
        """Undefines the domain ``name`` only if it is the VM ``uid`` and not running
        (a stale copy of a VM that now runs elsewhere); keeps its UEFI variables and,
        as always, its disks. True if there was one."""

        def drop(conn: Any) -> bool:
            dom = self._lookup(conn, name=name)
            if dom is None or dom.UUIDString() != uid or dom.isActive():
                return False
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            return True

        async with self._lock(name):
            return await self._hv.call(f"forgetting VM {name}", drop)

    async def _undefine(self, name: str) -> None:
        def undefine(conn: Any) -> None:
            dom = self._lookup(conn, name=name)
            if dom is None:
                return
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

        await self._hv.call(f"removing VM {name}", undefine)

    async def _domain_op(self, name: str, what: str, op: str, *, allowed: tuple[str, ...]) -> None:
        current = await self.state(name)
        if current not in allowed:
            raise FailedPrecondition(
                f"cannot {what} VM {name} while it is {current} (allowed when {' or '.join(allowed)})",
                reason=f"VM_{current.upper()}",
            )
        await self._hv.call(f"{what} VM {name}", lambda c: getattr(c.lookupByName(name), op)())

    async def start(self, name: str) -> None:
        async with self._lock(name):
            await self._domain_op(name, "start", "create", allowed=("stopped", "crashed"))

    async def pause(self, name: str) -> None:
        await self._domain_op(name, "pause", "suspend", allowed=("running",))

    async def resume(self, name: str) -> None:
        await self._domain_op(name, "resume", "resume", allowed=("paused",))

    async def force_off(self, name: str) -> None:
        await self._domain_op(
            name, "force off", "destroy", allowed=("running", "paused", "stopping", "crashed")
        )

    async def reboot(self, name: str) -> None:
        """An ACPI reboot request (the guest decides; libvirt restarts it when it powers off)."""
        current = await self.state(name)
        if current != "running":
            raise FailedPrecondition(
                f"cannot reboot VM {name} while it is {current}", reason=f"VM_{current.upper()}"
            )
        await self._hv.call(
            f"rebooting VM {name}",
            lambda c: c.lookupByName(name).reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN),
        )

    async def stop(self, name: str, *, timeout: float) -> bool:
        """ACPI power button, then force off after ``timeout`` seconds; True if forced."""
        async with self._lock(name):
            current = await self.state(name)
            if current == "stopped":
                raise FailedPrecondition(f"VM {name} is already stopped", reason="VM_STOPPED")
            if current == "running":
                await self._hv.call(
                    f"shutting down VM {name}", lambda c: c.lookupByName(name).shutdownFlags(_ACPI)
                )
                if await self.wait_state(name, ("stopped",), timeout=timeout) == "stopped":
                    return False
            with contextlib.suppress(FailedPrecondition):  # it may have stopped just now
                await self._hv.call(f"forcing off VM {name}", lambda c: c.lookupByName(name).destroy())
            await self.wait_state(name, ("stopped",), timeout=10)
            return True

    async def delete(self, name: str) -> VmSpec:
        """Removes a stopped VM's definition (and its UEFI variables and console log);
        returns its spec so the caller can delete volumes if asked to."""
        async with self._lock(name):
            status = await self.status(name)
            if status.state not in ("stopped", "crashed"):
                raise FailedPrecondition(
                    f"VM {name} is {status.state}: stop it first", reason=f"VM_{status.state.upper()}"
                )
            await self._undefine(name)
        designer.console_log(self._traits, status.spec).unlink(missing_ok=True)
        return status.spec

    # -- changes ---------------------------------------------------------------

    @staticmethod
    def _attached(status: VmStatus, path: str) -> DiskSpec:
        for disk in status.spec.disks:
            if disk.path == path:
                return disk
        raise NotFound(
            f"{path} is not attached to VM {status.spec.name}", field="path", reason="DISK_NOT_ATTACHED"
        )

    async def _redefine(self, name: str, change: Any) -> VmStatus:
        """Applies ``change(spec) -> spec`` to a stopped VM's definition."""
        async with self._lock(name):
            status = await self.status(name)
            if status.state != "stopped":
                raise FailedPrecondition(
                    f"VM {name} is {status.state}: CPU and memory change while stopped",
                    reason=f"VM_{status.state.upper()}",
                )
            spec = validate(change(status.spec))
            xml = self.domain_xml(spec, generation=status.generation + 1)
            await self._hv.call(f"updating VM {name}", lambda c: c.defineXML(xml))
        return await self.status(name)

    async def update_offline(
        self, name: str, *, vcpus: int | None = None, memory_mib: int | None = None
    ) -> VmStatus:
        def change(spec: VmSpec) -> VmSpec:
            updated = replace(spec, vcpus=vcpus or spec.vcpus, memory_mib=memory_mib or spec.memory_mib)
            if vcpus and spec.sockets:  # a new count drops a topology that no longer multiplies out
                updated = replace(updated, sockets=0, cores=0, threads=0)
            return updated

        return await self._redefine(name, change)

    async def _device_change(
        self, name: str, change: Callable[[VmStatus], tuple[VmSpec, str]], *, attach: bool
    ) -> VmStatus:
        """Hot-plug/unplug on a running VM (live + persistent), plain redefine otherwise;
        the metadata follows in the same step, so it always describes the devices.
        ``change(status) -> (new spec, device XML)`` runs under the VM's lock, so two
        concurrent changes never compute from the same old spec."""
        async with self._lock(name):
            status = await self.status(name)
            spec, device_xml = change(status)
            generation = status.generation + 1
            facts = metadata.metadata_xml(metadata.VmFacts(spec=spec, generation=generation))
            live = status.state in ("running", "paused")

            def apply(conn: Any) -> None:
                dom = conn.lookupByName(name)
                flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
                if attach:
                    dom.attachDeviceFlags(device_xml, flags)
                else:
                    dom.detachDeviceFlags(device_xml, flags)
                dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    facts,
                    metadata.PREFIX,
                    metadata.NAMESPACE,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0),
                )

            await self._hv.call(f"{'attaching to' if attach else 'detaching from'} VM {name}", apply)
        return await self.status(name)

    @staticmethod
    def _disk_xml(disk: DiskSpec) -> str:
        element = designer.disk(disk, direct_io=supports_direct_io(disk.path))
        root = ET.Element("devices")
        element.render(root)
        return ET.tostring(root[0], encoding="unicode")

    async def attach_disk(self, name: str, disk: DiskSpec) -> VmStatus:
        def change(status: VmStatus) -> tuple[VmSpec, str]:
            validate_disk(disk, prefix="disk", machine=status.spec.machine)
            if any(d.path == disk.path for d in status.spec.disks):
                raise AlreadyExists(
                    f"{disk.path} is already attached to VM {name}", field="disk.path", reason="DISK_ATTACHED"
                )
            if not Path(disk.path).exists():
                raise NotFound(
                    f"volume file {disk.path} does not exist", field="disk.path", reason="VOLUME_NOT_FOUND"
                )
            spec = validate(status.spec.with_disks(designer.assign_targets((*status.spec.disks, disk))))
            return spec, self._disk_xml(spec.disks[-1])

        return await self._device_change(name, change, attach=True)

    async def detach_disk(self, name: str, path: str) -> VmStatus:
        def change(status: VmStatus) -> tuple[VmSpec, str]:
            device = self._disk_xml(self._attached(status, path))
            return status.spec.with_disks(tuple(d for d in status.spec.disks if d.path != path)), device

        return await self._device_change(name, change, attach=False)

    @staticmethod
    def _nic_xml(nic: NicSpec) -> str:
        root = ET.Element("devices")
        designer.interface(nic).render(root)
        return ET.tostring(root[0], encoding="unicode")

    async def attach_nic(self, name: str, nic: NicSpec) -> VmStatus:
        validate_nic(nic, prefix="nic")

        def change(status: VmStatus) -> tuple[VmSpec, str]:
            if any(n.mac == nic.mac for n in status.spec.nics):
                raise AlreadyExists(
                    f"VM {name} already has a NIC {nic.mac}", field="nic.mac", reason="NIC_EXISTS"
                )
            return validate(status.spec.with_nics((*status.spec.nics, nic))), self._nic_xml(nic)

        return await self._device_change(name, change, attach=True)

    async def detach_nic(self, name: str, mac: str) -> VmStatus:
        def change(status: VmStatus) -> tuple[VmSpec, str]:
            nic = next((n for n in status.spec.nics if n.mac == mac), None)
            if nic is None:
                raise NotFound(f"VM {name} has no NIC {mac}", field="mac", reason="NIC_NOT_FOUND")
            return status.spec.with_nics(tuple(n for n in status.spec.nics if n.mac != mac)), self._nic_xml(
                nic
            )

        return await self._device_change(name, change, attach=False)

    async def set_qos(self, name: str, path: str, qos: Qos) -> VmStatus:
        """New limits for one disk, live on a running VM (QEMU throttles at once) and in
        the definition. Limits not set are cleared (0 = unlimited)."""
        storage_validate.qos(qos, field="qos")
        async with self._lock(name):
            return await self._set_qos(name, path, qos)

    async def _set_qos(self, name: str, path: str, qos: Qos) -> VmStatus:
        status = await self.status(name)
        target = self._attached(status, path).target
        spec = status.spec.with_disks(
            tuple(replace(d, qos=qos) if d.path == path else d for d in status.spec.disks)
        )
        params: dict[str, int] = {key: 0 for key in _ALL_IOTUNE}
        params.update({k: int(v) for k, v in iotune_params(qos).items()})
        live = status.state in ("running", "paused")
        facts = metadata.metadata_xml(metadata.VmFacts(spec=spec, generation=status.generation + 1))

        def apply(conn: Any) -> None:
            dom = conn.lookupByName(name)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
            # libvirt takes one of LIVE/CONFIG per call for I/O limits.
            if live:
                dom.setBlockIoTune(target, params, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            dom.setBlockIoTune(target, params, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, facts, metadata.PREFIX, metadata.NAMESPACE, flags
            )

        await self._hv.call(f"setting QoS of {target} on VM {name}", apply)
        return await self.status(name)

    async def live_iotune(self, name: str, path: str) -> dict[str, int]:
        """What QEMU enforces right now for one disk (virDomainGetBlockIoTune)."""
        target = self._attached(await self.status(name), path).target
        raw = await self._hv.call(
            f"reading QoS of VM {name}",
            lambda c: c.lookupByName(name).blockIoTune(target, libvirt.VIR_DOMAIN_AFFECT_LIVE),
        )
        return {k: int(v) for k, v in raw.items() if isinstance(v, int)}

    # -- disk snapshots ----------------------------------------------------------

    async def switch_disk(self, name: str, old: Path, new: Path) -> VmStatus:
        """The VM's disk ``old`` moves onto ``new``, a qcow2 overlay whose backing is
        ``old`` (a volume snapshot's new active layer). Running: one atomic, disk-only
        external snapshot in QEMU (the guest keeps running; libvirt keeps no snapshot
        metadata: the storage records are the truth). Stopped: a new definition.
        The metadata's spec follows. Raises only when the VM still uses ``old``."""
        async with self._lock(name):
            status = await self.status(name)
            disk = self._attached(status, str(old))
            spec = status.spec.with_disks(
                tuple(replace(d, path=str(new)) if d.path == str(old) else d for d in status.spec.disks)
            )
            generation = status.generation + 1
            if status.state not in ("running", "paused"):
                xml = self.domain_xml(spec, generation=generation)
                await self._hv.call(f"moving a disk of VM {name}", lambda c: c.defineXML(xml))
                return await self.status(name)
            snapshot_xml = _external_snapshot_xml(status.spec.disks, disk.target, new)
            facts = metadata.metadata_xml(metadata.VmFacts(spec=spec, generation=generation))
            flags = (
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            )
            await self._hv.call(
                f"snapshotting disk {disk.target} of VM {name}",
                lambda c: c.lookupByName(name).snapshotCreateXML(snapshot_xml, flags),
            )
            try:
                await self._hv.call(
                    f"recording the new disk of VM {name}",
                    lambda c: c.lookupByName(name).setMetadata(
                        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                        facts,
                        metadata.PREFIX,
                        metadata.NAMESPACE,
                        libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE,
                    ),
                )
            except ZsdError:
                # QEMU has switched already: raising would make the caller drop the
                # layer the guest now writes. The domain XML itself names the new file.
                log.exception("VM %s writes %s now, but its metadata still names %s", name, new, old)
        return await self.status(name)

    # -- block jobs --------------------------------------------------------------

    async def block_pull(self, name: str, path: Path, progress: Callable[[float], None]) -> None:
        """Streams the backing chain of the running VM's disk ``path`` into it (QEMU's
        block-stream, under the guest) and waits until QEMU has dropped the backing
        link; ``progress`` gets percents. Cancelling aborts the job: the disk stays
        linked, as it was."""
        status = await self.status(name)
        disk = self._attached(status, str(path))
        target = disk.target

        def job(conn: Any) -> dict[str, int]:
            return dict(conn.lookupByName(name).blockJobInfo(target, 0))

        await self._hv.call(
            f"pulling {target} of VM {name}", lambda c: c.lookupByName(name).blockPull(target, 0, 0)
        )
        try:
            while True:
                info = await self._hv.call(f"reading the block job on {target} of {name}", job)
                if not info:
                    return  # block-stream finished: QEMU removed the job after the switch
                end = int(info.get("end", 0))
                if end > 0:
                    progress(100.0 * int(info.get("cur", 0)) / end)
                await trio.sleep(0.2)
        except trio.Cancelled:
            with trio.CancelScope(shield=True), contextlib.suppress(ZsdError):
                await self._hv.call(
                    f"aborting the block job on {target} of {name}",
                    lambda c: c.lookupByName(name).blockJobAbort(target, 0),
                )
            raise

    # -- moving ------------------------------------------------------------------

    async def migrate(
        self,
        name: str,
        *,
        dest_uri: str,
        dest_address: str,
        dest_console_dir: Path,
        shared_storage: bool = False,
        progress: Callable[[int], None] = lambda _p: None,
    ) -> bool:
        """Moves the VM to the libvirtd at ``dest_uri``: live (peer-to-peer, with
        auto-converge) when it runs, offline (its definition) when stopped. Its
        disks must be on storage both hosts see. Cancelling aborts the job and the
        VM stays here as it was. ``shared_storage``: zsd has proven that both hosts
        see the same disks (a shared pool's marker), which libvirt cannot tell on
        every filesystem. Returns whether it was live."""
        async with self._lock(name):
            status = await self.status(name)
            live = status.state in ("running", "paused")
            log_path = str(dest_console_dir / f"{status.spec.uid}.log")

            def definitions(conn: Any) -> tuple[str, str]:
                dom = conn.lookupByName(name)
                secure = libvirt.VIR_DOMAIN_XML_SECURE
                active = dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_MIGRATABLE) if live else ""
                inactive = dom.XMLDesc(
                    secure | libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                )
                return _with_console_log(active, log_path) if live else "", _with_console_log(
                    inactive, log_path
                )

            active_xml, persistent_xml = await self._hv.call(f"reading VM {name}", definitions)
            flags, params = _migration_args(
                live=live,
                tls=dest_uri.startswith("qemu+tls"),
                shared_storage=shared_storage,
                dest_address=dest_address,
                active_xml=active_xml,
                persistent_xml=persistent_xml,
            )
            dest_uri = libvirtpki.with_pkipath(dest_uri, self._pki_dir)
            done = trio.Event()
            failure: list[BaseException] = []

            async def run() -> None:
                try:
                    await self._hv.call(
                        f"migrating VM {name} to {dest_uri}",
                        lambda c: c.lookupByName(name).migrateToURI3(dest_uri, params, flags),
                    )
                except BaseException as e:
                    failure.append(e)
                finally:
                    done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                try:
                    while not done.is_set():
                        percent = await self._migration_percent(name) if live else None
                        if percent is not None:
                            progress(percent)
                        with trio.move_on_after(0.5):
                            await done.wait()
                except trio.Cancelled:
                    with trio.CancelScope(shield=True):
                        with contextlib.suppress(ZsdError):
                            await self._hv.call(
                                f"aborting the migration of {name}", lambda c: c.lookupByName(name).abortJob()
                            )
                        await done.wait()
                    raise
            if failure:
                raise failure[0]
            return live

    async def _migration_percent(self, name: str) -> int | None:
        def stats(conn: Any) -> dict[str, Any]:
            return dict(conn.lookupByName(name).jobStats())

        try:
            job = await self._hv.call(f"reading the migration of {name}", stats)
        except ZsdError:
            return None
        total = int(job.get("data_total", 0) or 0)
        remaining = int(job.get("data_remaining", 0) or 0)
        if total <= 0:
            return None
        return max(0, min(99, int(100 * (total - remaining) / total)))

    # -- console and display ---------------------------------------------------

    async def display(self, name: str) -> Display:
        xml = await self._hv.call(f"reading VM {name}", lambda c: c.lookupByName(name).XMLDesc(0))
        graphics = ET.fromstring(xml).find("devices/graphics")
        if graphics is None:
            raise FailedPrecondition(f"VM {name} has no display", reason="NO_DISPLAY")
        port = int(graphics.get("port", "-1"))
        if port <= 0:
            raise FailedPrecondition(f"VM {name} is not running: no display port", reason="VM_STOPPED")
        return Display(kind=graphics.get("type", ""), address=graphics.get("listen", ""), port=port)

    async def console(self, name: str, *, follow: bool = True) -> AsyncIterator[bytes]:
        """The serial console's output from the start of the log: everything already
        written, then (``follow``) new output as it comes, until the caller stops."""
        status = await self.status(name)
        path = designer.console_log(self._traits, status.spec)
        offset = 0
        while True:
            chunk = await trio.to_thread.run_sync(_read_from, path, offset)
            if chunk:
                offset += len(chunk)
                yield chunk
                continue
            if not follow:
                return
            await trio.sleep(_POLL)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(65536)
    except FileNotFoundError:
        return b""


_IOTUNE_LIMITS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
    "total_bytes_sec_max",
    "read_bytes_sec_max",
    "write_bytes_sec_max",
    "total_iops_sec_max",
    "read_iops_sec_max",
    "write_iops_sec_max",
)
# Every limit is written on each change: a limit left out would keep its old value
# (and a stale *_max_length without its burst is refused by QEMU).
_ALL_IOTUNE: tuple[str, ...] = (
    *_IOTUNE_LIMITS,
    *(f"{key}_length" for key in _IOTUNE_LIMITS if key.endswith("_max")),
)


def _with_console_log(xml: str, path: str) -> str:
    """The domain with its serial console logged to ``path`` (the destination's)."""
    root = ET.fromstring(xml)
    for log_element in root.findall("devices/serial/log"):
        log_element.set("file", path)
    return ET.tostring(root, encoding="unicode")


def _external_snapshot_xml(disks: tuple[DiskSpec, ...], target: str, new: Path) -> str:
    """A disk-only snapshot of ``target`` onto the existing file ``new``; every other
    disk is left alone (libvirt would otherwise snapshot each one)."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "description").text = "zsd volume snapshot"
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        if disk.target == target:
            element = ET.SubElement(listed, "disk", name=target, snapshot="external", type="file")
            ET.SubElement(element, "driver", type="qcow2")
            ET.SubElement(element, "source", file=str(new))
        else:
            ET.SubElement(listed, "disk", name=disk.target, snapshot="no")
    return ET.tostring(root, encoding="unicode")


def _migration_args(
    *, live: bool, tls: bool, shared_storage: bool, dest_address: str, active_xml: str, persistent_xml: str
) -> tuple[int, dict[str, Any]]:
    """(flags, typed parameters) of a peer-to-peer migration that leaves the VM
    defined only at the destination."""
    flags = (
        libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persistent_xml}
    if not live:
        return flags | libvirt.VIR_MIGRATE_OFFLINE, params
    flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_AUTO_CONVERGE
    params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = active_xml
    # The memory stream goes straight to the destination's address (its hostname may
    # not resolve to the cluster network).
    params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{dest_address}"
    if tls:
        # QEMU encrypts the stream itself, with the certificates of qemu.conf's
        # default_tls_x509_cert_dir (the cluster's, see zsd.cluster.libvirtpki).
        flags |= libvirt.VIR_MIGRATE_TLS
    if shared_storage:
        # libvirt only trusts NFS/GFS2/Ceph-like filesystems to be shared.
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return flags, params
