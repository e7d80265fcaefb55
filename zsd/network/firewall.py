"""Every member enforces the security groups of the NICs of VMs it runs: one nftables
ruleset (``zsd.network.secgroups``), compiled from the state copy and applied
atomically on every change and every ``resync`` seconds. A NIC's port is its VM's
tap, named from its MAC (``designer.tap_name``), so it is the same on whichever host
the VM runs. Remote-group rules follow membership cluster-wide: every NIC's addresses
count, wherever its VM runs.

Every NIC of a VM here is filtered, also one in no group: its defaults apply
(ingress deny, egress allow unless changed), and DHCP and IPv6 neighbour discovery
pass as the compiler documents. NICs of no VM (created, not used) are not here.

Each NIC's connections are tracked in its port group's conntrack zone (the bridge,
named from the port-group key the NIC record holds); the first apply after a start
takes the zones the kernel's ruleset holds, so a restart renumbers none (which
would end their connections). After every apply, the connections the new policy
no longer admits are deleted (``revocation``), so revoking access ends established
connections too. That sweep reads the conntrack table (the long part) without
holding the lock applies take, and deletes holding it, sparing what the policy
enforced by then admits; one sweep at a time, several applies meanwhile make one
more sweep.

A NIC whose port is new in the ruleset (a VM live-migrated here, every NIC on the
first apply after a start) has a pickup window (``pickup``): its established TCP
connections, which this host's conntrack has never seen, are picked up mid-stream
instead of dropped.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from zsd.cluster.control import ClusterControl
from zsd.compute.designer import tap_name
from zsd.compute.records import KIND_VM, VmRecord
from zsd.network.follow import follow_state
from zsd.network.model import link_name
from zsd.network.nics import KIND_NIC, NicRecord, decode_all
from zsd.network.secgroups.compiler import Compiler
from zsd.network.secgroups.ctnetlink import KernelConntrack
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.hostmodel import HitCount, HostFirewall, HostNic, membership
from zsd.network.secgroups.nftapply import (
    NftRunner,
    RulesetApplier,
    enable_bridge_netfilter,
    libnftables,
    loaded_zones,
)
from zsd.network.secgroups.pickup import PickupWindows
from zsd.network.secgroups.revocation import ConntrackTable, Revoker, SweepReport
from zsd.network.secgroups.rules import Action
from zsd.network.secrecords import KIND_SECGROUP
from zsd.network.secrecords import decode_all as decode_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class _Enforced:
    """What the kernel enforces since the last successful apply."""

    firewall: HostFirewall
    zones: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class _Member:
    groups: tuple[str, ...]
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def _split(addresses: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    parsed = [ipaddress.ip_address(a) for a in addresses]
    return tuple(str(a) for a in parsed if a.version == 4), tuple(str(a) for a in parsed if a.version == 6)


def host_firewall(
    *, host: str, nics: Sequence[NicRecord], vms: Sequence[VmRecord], groups: Mapping[str, SecurityGroup]
) -> HostFirewall:
    """This host's firewall (a pure function of the cluster state); ``groups``: every
    security group by name."""
    here = {nic for vm in vms if vm.host == host for nic in vm.nics}
    host_nics = []
    members = []
    for nic in sorted(nics, key=lambda n: n.name):
        ipv4, ipv6 = _split(nic.addresses)
        members.append(_Member(groups=nic.security_groups, ipv4=ipv4, ipv6=ipv6))
        if nic.name in here:
            host_nics.append(
                HostNic(
                    port=tap_name(nic.mac),
                    mac=nic.mac,
                    ipv4=ipv4,
                    ipv6=ipv6,
                    groups=tuple(g for g in nic.security_groups if g in groups),
                    ingress_default=Action(nic.ingress_default),
                    egress_default=Action(nic.egress_default),
                    # PortGroup.bridge without the record: the NIC holds the port group's key
                    bridge=link_name("zb", nic.port_group),
                )
            )
    return HostFirewall(nics=tuple(host_nics), groups=groups, members=membership(members))


class FirewallReconciler:
    def __init__(
        self,
        *,
        control: ClusterControl,
        host: str,
        procfs: Path = Path("/proc"),
        resync: float = 30.0,
        conntrack: Callable[[], ConntrackTable] = KernelConntrack,
        nft: Callable[[], NftRunner] = libnftables,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        self._host = host
        self._procfs = procfs
        self._resync = resync
        self._conntrack = conntrack
        self._nft = nft
        self._clock = clock
        self._compiler = Compiler()
        self._applier: RulesetApplier | None = None
        self._windows = PickupWindows(clock=clock)
        self._revoker = Revoker()
        self._enforced: _Enforced | None = None
        self._lock = trio.Lock()
        """Held by applies (and by a sweep's deletes)."""
        self._sweep_lock = trio.Lock()
        self._sweep_wanted = trio.Event()
        self.problem = ""

    def desired(self) -> HostFirewall:
        cache = self._control.replica.cache
        groups = {g.group.name: g.group for g in decode_groups(cache.list(KIND_SECGROUP))}
        return host_firewall(
            host=self._host,
            nics=decode_all(cache.list(KIND_NIC)),
            vms=[VmRecord.decode(r.data) for r in cache.list(KIND_VM)],
            groups=groups,
        )

    def _apply(self, desired: HostFirewall) -> None:
        if self._applier is None and not desired.nics:
            # Nothing to guard yet: leave the host's netfilter (br_netfilter sysctls
            # change every bridge's filtering) as it is until a VM NIC runs here.
            return
        if self._applier is None:
            enable_bridge_netfilter(self._procfs)
            nft = self._nft()
            self._compiler = Compiler(zones=loaded_zones(nft))
            self._applier = RulesetApplier(nft, clock=self._clock)
        compiled = self._compiler.compile(desired, pickup=self._windows.update(n.port for n in desired.nics))
        self._applier.apply(compiled)
        self._enforced = _Enforced(firewall=desired, zones=compiled.zones)

    async def enforce(self, desired: HostFirewall) -> None:
        """Applies ``desired``, then asks for a sweep (which :meth:`run` makes)."""
        async with self._lock:
            await trio.to_thread.run_sync(self._apply, desired)
        self._sweep_wanted.set()

    async def round(self) -> None:
        await self.enforce(self.desired())

    async def sweep(self) -> SweepReport | None:
        """Ends the connections of the enforced policy's changed NICs that it no longer
        admits (None: nothing enforced yet). Reads the table without the apply lock,
        deletes with it, against the policy enforced then."""
        async with self._sweep_lock:
            enforced = self._enforced
            if enforced is None:
                return None
            table = self._conntrack()
            try:
                judge = partial(self._revoker.judge, table, firewall=enforced.firewall, zones=enforced.zones)
                found = await trio.to_thread.run_sync(judge)
                async with self._lock:
                    latest = self._enforced or enforced
                    finish = partial(
                        self._revoker.finish, table, found, latest=latest.firewall, zones=latest.zones
                    )
                    report = await trio.to_thread.run_sync(finish)
            finally:
                table.close()
        if report.deleted:
            log.info(
                "security groups: %d connection(s) no longer allowed ended (%d NICs, %d entries, %.0f ms)",
                report.deleted,
                report.nics,
                report.seen,
                report.seconds * 1000,
            )
        return report

    async def _sweeper(self) -> None:
        while True:
            await self._sweep_wanted.wait()
            self._sweep_wanted = trio.Event()
            try:
                await self.sweep()
            except Exception:
                # the revoker keeps what it last swept for: the next round's sweep retries
                log.exception("security groups: ending connections no longer allowed failed")

    async def hits(self) -> tuple[HitCount, ...]:
        async with self._lock:
            applier = self._applier
            return await trio.to_thread.run_sync(applier.hits) if applier is not None else ()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            task_status.started()
            await follow_state(
                self._control.replica, self._enforced_now, resync=self._resync, failed=self._failed
            )

    async def _enforced_now(self) -> bool:
        await self.round()
        self.problem = ""
        return True

    def _failed(self, e: Exception) -> None:
        # The filter stays as last applied (atomic); retried soon.
        if str(e) != self.problem:
            log.exception("security groups: enforcing the host's ruleset failed", exc_info=e)
        self.problem = str(e)
