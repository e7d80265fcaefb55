"""``shared-block``: an LVM volume group on shared LUNs (a SAN), locked across hosts
by lvmlockd with sanlock, the way oVirt and Proxmox use SANs.

Every host finds the LUNs by WWID (device names differ between hosts; with
multipath the dm device carries the WWID), then the VG by name. Creating the pool
makes the PVs and a *shared* VG (``vgcreate --shared``: lvmlockd keeps its sanlock
lockspace in the VG). Activation needs device-mapper in the kernel (an LV is a dm
device) and a running lvmlockd; without either the pool refuses with a capability
error that says which. Capacity comes from the VG's own metadata, which LVM reads
without device-mapper.

Volumes on it are LVs; qcow2 chains on LVs (oVirt's thin scheme) are not built
yet, so the pool declares no thin, snapshot, clone or image capability and the
volume calls refuse it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, Unsupported
from zsd.storage.model import Capabilities
from zsd.storage.pools.base import Physical, PoolSpec


class VgFacts(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def free(self) -> int: ...

    @property
    def lock_type(self) -> str: ...


class LvmOps(Protocol):
    """What this driver needs from LVM (``zsd.storage.lvm`` provides it)."""

    def pvcreate(self, device: str) -> None: ...

    def vgcreate(self, name: str, devices: list[str], *, shared: bool) -> None: ...

    def vg(self, name: str) -> VgFacts: ...


class BlockHost(Protocol):
    """This host's view of block devices and kernel features."""

    def device_mapper(self) -> bool: ...

    def lvmlockd(self) -> bool: ...

    def device_for_wwid(self, wwid: str) -> str | None: ...


class SharedBlockPool:
    capabilities = Capabilities(shared=True, thin=False, snapshots=False, linked_clones=False, images=False)

    def __init__(self, spec: PoolSpec, *, lvm: LvmOps, host: BlockHost) -> None:
        if not spec.vg_name:
            raise InvalidArgument("a shared-block pool needs the volume group's name", field="pool.vg_name")
        if not spec.wwids:
            raise InvalidArgument(
                "a shared-block pool needs the WWIDs of its LUNs "
                "(see /dev/disk/by-id/wwn-* or multipath -ll)",
                field="pool.wwids",
            )
        self._spec = spec
        self._lvm = lvm
        self._host = host

    @property
    def spec(self) -> PoolSpec:
        return self._spec

    @property
    def root(self) -> Path:
        raise Unsupported(
            f"pool {self._spec.name!r} is block storage and has no directory", reason="UNSUPPORTED_POOL"
        )

    def devices(self) -> list[str]:
        """The LUNs as this host names them."""
        found = []
        for wwid in self._spec.wwids:
            device = self._host.device_for_wwid(wwid)
            if device is None:
                raise FailedPrecondition(
                    f"no block device with WWID {wwid} on this host: is the LUN presented to it "
                    "(and multipathd running)?",
                    reason="LUN_NOT_FOUND",
                    metadata={"wwid": wwid},
                )
            found.append(device)
        return found

    def _require_capabilities(self) -> None:
        if not self._host.device_mapper():
            raise Unsupported(
                "device-mapper is not available in this host's kernel (no /dev/mapper/control): "
                "LVM logical volumes cannot be activated, so shared-block pools cannot be used here",
                reason="DEVICE_MAPPER_MISSING",
            )
        if not self._host.lvmlockd():
            raise Unsupported(
                "lvmlockd is not running here (package lvm2-lockd; lvm.conf use_lvmlockd=1): "
                "a shared volume group needs it to lock LVs across hosts",
                reason="LVMLOCKD_MISSING",
            )

    async def create(self) -> None:
        self._require_capabilities()
        devices = self.devices()
        try:
            facts = self._lvm.vg(self._spec.vg_name)
        except NotFound:
            for device in devices:
                self._lvm.pvcreate(device)
            self._lvm.vgcreate(self._spec.vg_name, devices, shared=True)
            return
        if facts.lock_type != "sanlock":
            raise FailedPrecondition(
                f"volume group {self._spec.vg_name!r} exists with lock type {facts.lock_type or 'none'!r}; "
                "a shared-block pool needs a shared (sanlock) VG",
                reason="VG_NOT_SHARED",
            )

    async def activate(self) -> None:
        self._require_capabilities()
        self.devices()
        facts = self._lvm.vg(self._spec.vg_name)
        if facts.lock_type != "sanlock":
            raise FailedPrecondition(
                f"volume group {self._spec.vg_name!r} is not shared "
                f"(lock type {facts.lock_type or 'none'!r})",
                reason="VG_NOT_SHARED",
            )

    async def physical(self) -> Physical:
        facts = self._lvm.vg(self._spec.vg_name)
        return Physical(size=facts.size, used=facts.size - facts.free, free=facts.free)
