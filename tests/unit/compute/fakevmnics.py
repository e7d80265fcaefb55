"""The NICs of VMs on a VM's host, as the leader's hot-plug steps see them: plugged and
unplugged by MAC, refused as ``LocalVms.attach_nic``/``detach_nic`` refuse (NIC_EXISTS,
NIC_NOT_FOUND), and a refusal to give the next call, as libvirt gives one when it
cannot plug (a bridge that is missing, a guest that does not release the device)."""

from __future__ import annotations

from zsd.errors import AlreadyExists, NotFound, ZsdError


class FakeVmNics:
    def __init__(self, vms: dict[str, tuple[str, ...]] | None = None) -> None:
        self.macs: dict[str, tuple[str, ...]] = dict(vms or {})
        """VM name -> the MACs of its NICs."""
        self.refuse: ZsdError | None = None
        """Raised (once) by the next plug or unplug, which then changes nothing."""
        self.calls: list[tuple[str, str, str]] = []
        """(plug|unplug, VM, MAC), refused ones included."""

    def _refusal(self) -> None:
        error, self.refuse = self.refuse, None
        if error is not None:
            raise error

    async def plug(self, vm: str, mac: str) -> tuple[str, ...]:
        """The VM's MACs afterwards."""
        self.calls.append(("plug", vm, mac))
        self._refusal()
        macs = self.macs.setdefault(vm, ())
        if mac in macs:
            raise AlreadyExists(f"VM {vm} already has a NIC {mac}", field="nic.mac", reason="NIC_EXISTS")
        self.macs[vm] = (*macs, mac)
        return self.macs[vm]

    async def unplug(self, vm: str, mac: str) -> tuple[str, ...]:
        self.calls.append(("unplug", vm, mac))
        self._refusal()
        macs = self.macs.get(vm, ())
        if mac not in macs:
            raise NotFound(f"VM {vm} has no NIC {mac}", field="mac", reason="NIC_NOT_FOUND")
        self.macs[vm] = tuple(m for m in macs if m != mac)
        return self.macs[vm]

    async def current(self, vm: str) -> tuple[str, ...]:
        return self.macs.get(vm, ())
