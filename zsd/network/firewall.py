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
named from the port-group key the NIC record holds). After every apply, the
connections the new policy no longer admits are deleted (``revocation``), so
revoking access ends established connections too.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from zsd.cluster.control import ClusterControl
from zsd.compute.designer import tap_name
from zsd.compute.records import KIND_VM, VmRecord
from zsd.network.model import link_name
from zsd.network.nics import KIND_NIC, NicRecord, decode_all
from zsd.network.secgroups.compiler import Compiler
from zsd.network.secgroups.ctnetlink import KernelConntrack
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.hostmodel import HitCount, HostFirewall, HostNic, membership
from zsd.network.secgroups.nftapply import RulesetApplier, enable_bridge_netfilter, libnftables
from zsd.network.secgroups.revocation import ConntrackTable, Revoker
from zsd.network.secgroups.rules import Action
from zsd.network.secrecords import KIND_SECGROUP
from zsd.network.secrecords import decode_all as decode_groups

log = logging.getLogger(__name__)


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
    ) -> None:
        self._control = control
        self._host = host
        self._procfs = procfs
        self._resync = resync
        self._conntrack = conntrack
        self._compiler = Compiler()
        self._applier: RulesetApplier | None = None
        self._revoker = Revoker()
        self._lock = trio.Lock()
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
            self._applier = RulesetApplier(libnftables())
        compiled = self._compiler.compile(desired)
        self._applier.apply(compiled)
        # after the apply (not part of the transaction): new connections are already
        # judged by the new ruleset while the old ones are looked at
        table = self._conntrack()
        try:
            report = self._revoker.after_apply(table, firewall=desired, zones=compiled.zones)
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

    async def round(self) -> None:
        desired = self.desired()
        async with self._lock:
            await trio.to_thread.run_sync(self._apply, desired)

    async def hits(self) -> tuple[HitCount, ...]:
        async with self._lock:
            applier = self._applier
            return await trio.to_thread.run_sync(applier.hits) if applier is not None else ()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.round()
                self.problem = ""
            except Exception as e:
                # The filter stays as last applied (atomic); retried soon.
                if str(e) != self.problem:
                    log.exception("security groups: enforcing the host's ruleset failed")
                self.problem = str(e)
            with trio.move_on_after(5.0 if self.problem else self._resync):
                await self._control.replica.wait_changed()
