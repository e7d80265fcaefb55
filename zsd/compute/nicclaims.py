"""Network NICs hot-plugged into VMs that already exist: the leader's claim of a NIC
for a VM and its release, and the order of those around the VM host's libvirt change.

A NIC is in use exactly while a VM record lists it (``zsd.network.nics``), so the
claim is a change of the VM's record, made under the placement lock (no create takes
the NIC between the check and the commit). Every host's DHCP, firewall and VXLAN
entries follow the records, so the NIC is served where the VM runs from the claim on.

Attach: claim, then plug; a plug the VM's host refused releases the claim again.
Detach: unplug, then release; the NIC record itself stays (free again). An answer
that may still come true (the VM's host did not answer in time, the caller went
away) leaves the claim in place: the NIC may be plugged by now, and a NIC two VMs
use is worse than one held until ``DetachNic`` frees it (which also frees a claim
whose VM never got the NIC: a leader that died between the two steps).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from zsd.compute.records import VmRecord
from zsd.compute.scheduler import Scheduler
from zsd.errors import DeadlineExceeded, FailedPrecondition, NotFound, ZsdError
from zsd.network.catalog import NetworkCatalog
from zsd.network.nics import NicRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

FIELD = "nic.nic"
"""The request field that names the NIC (AttachNicRequest.nic.nic)."""


@dataclass(frozen=True, kw_only=True)
class Claim:
    vm: VmRecord
    """The VM's record, listing the NIC."""
    nic: NicRecord
    revision: int
    """The revision the record is at (the claim's commit when ``new``)."""
    new: bool
    """False: the record listed the NIC already (a repeated attach); nothing was written."""


class NicClaims:
    """``claim`` and ``release``: leader only. ``holding``: any host's copy."""

    def __init__(self, scheduler: Scheduler, network: NetworkCatalog) -> None:
        self._scheduler = scheduler
        self._network = network

    def holding(self, vm: str, mac: str) -> str:
        """The network NIC with MAC ``mac`` that VM ``vm``'s record lists; "" when
        none does (a NIC on a bridge, or none)."""
        users = self._network.nic_users()
        mac = mac.lower()
        return next(
            (
                n.name
                for n in self._network.nics()
                if n.mac == mac and (user := users.get(n.name)) is not None and user.name == vm
            ),
            "",
        )

    async def claim(self, vm: str, nic: str) -> Claim:
        """Lists NIC ``nic`` in VM ``vm``'s record. Refused: NIC_NOT_FOUND, NIC_IN_USE
        (naming the VM that has it), PORT_GROUP_NOT_ON_HOST (its switch does not span
        the VM's host); all with field ``nic.nic``."""
        seen: list[tuple[NicRecord, bool]] = []  # (the NIC, listed before)

        def change(record: VmRecord, others: Sequence[VmRecord]) -> VmRecord | None:
            seen.append((self._claimable(record, others, nic), nic in record.nics))
            return None if nic in record.nics else replace(record, nics=(*record.nics, nic))

        record, revision = await self._scheduler.amend(vm, change)
        found, listed = seen[0]
        return Claim(vm=record, nic=found, revision=revision, new=not listed)

    def _claimable(self, record: VmRecord, others: Sequence[VmRecord], nic: str) -> NicRecord:
        try:
            found = self._network.nic(nic)
        except NotFound:
            raise NotFound(
                f"NIC 'nics/{nic}' does not exist: name an existing NIC ('nics/NAME' or 'NAME', "
                "see zsctl nic list), or hot-plug on a bridge with nic.bridge",
                field=FIELD,
                reason="NIC_NOT_FOUND",
            ) from None
        holder = next((r for r in others if nic in r.nics), None)
        if holder is not None:
            raise FailedPrecondition(
                f"NIC 'nics/{nic}' is in use by VM 'vms/{holder.name}' (on {holder.host}): a NIC "
                "serves one VM; detach it there first, or name a free NIC",
                field=FIELD,
                reason="NIC_IN_USE",
            )
        switch_name, _, group = found.port_group.partition("/")
        try:
            switch = self._network.switch(switch_name)
        except NotFound:
            spans = False
            where = "no longer exists"
        else:
            spans = switch.spans(record.host)
            where = f"spans {', '.join(switch.hosts)}"
        if not spans:
            raise FailedPrecondition(
                f"NIC 'nics/{nic}' is on port group 'switches/{switch_name}/portGroups/{group}', whose "
                f"switch does not reach host {record.host} where VM 'vms/{record.name}' runs (it {where}): "
                f"only NICs of port groups whose switch spans {record.host} can be plugged there",
                field=FIELD,
                reason="PORT_GROUP_NOT_ON_HOST",
            )
        return found

    async def release(self, vm: str, nic: str) -> int:
        """Drops NIC ``nic`` from VM ``vm``'s record (nothing when it is not listed);
        the revision the record is at."""

        def change(record: VmRecord, _others: Sequence[VmRecord]) -> VmRecord | None:
            if nic not in record.nics:
                return None
            return replace(record, nics=tuple(n for n in record.nics if n != nic))

        _, revision = await self._scheduler.amend(vm, change)
        return revision


def may_still_happen(error: ZsdError) -> bool:
    """Whether the VM's host may still carry out the change that answered ``error``."""
    return isinstance(error, DeadlineExceeded)


async def plug_claimed(
    *,
    claim: Callable[[], Awaitable[Claim]],
    plug: Callable[[Claim], Awaitable[T]],
    release: Callable[[], Awaitable[object]],
) -> tuple[T, Claim]:
    """Claim, then plug; a refused plug releases a claim made here. Runs on either
    event loop (the steps cross to where they run)."""
    claimed = await claim()
    try:
        return await plug(claimed), claimed
    except ZsdError as e:
        if claimed.new and not may_still_happen(e):
            try:
                await release()
            except ZsdError as undo:
                log.warning(
                    "NIC %s stays claimed for VM %s: its plug failed (%s) and the release too (%s)",
                    claimed.nic.name,
                    claimed.vm.name,
                    e,
                    undo,
                )
        raise


async def unplug_released(
    *,
    unplug: Callable[[], Awaitable[T]],
    current: Callable[[], Awaitable[T]],
    release: Callable[[], Awaitable[int]],
) -> tuple[T, int]:
    """Unplug, then release; the VM (``unplug``'s answer, or ``current``) and the
    release's revision. A VM that lacks the NIC (NIC_NOT_FOUND) is released too: its
    record named a NIC it never got."""
    try:
        answer: T | None = await unplug()
    except NotFound as e:
        if e.reason != "NIC_NOT_FOUND":
            raise
        answer = None
    revision = await release()
    return (answer if answer is not None else await current()), revision
