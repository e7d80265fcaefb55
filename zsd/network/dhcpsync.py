"""Every member serves DHCP and DNS for the NICs of VMs that run on it: one scope per
port group with DHCP whose switch spans the host, listing the NICs whose VM record
names this host (so a migrated VM is served by its new host from the next change on),
and the port group's other NICs as plain DNS names. Converged on every change of the
state copy and every ``resync`` seconds; the service (``zsd.network.dhcp``) rewrites
hosts files and signals dnsmasq, never restarting it for a NIC change.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence

import trio

from zsd.cluster.control import ClusterControl
from zsd.compute.records import KIND_VM, VmRecord
from zsd.network import records
from zsd.network.dhcp.manager import DhcpManager
from zsd.network.dhcp.spec import DhcpNic, DhcpScope, DnsRecord, Ipv4Subnet, Ipv6Subnet
from zsd.network.follow import follow_state
from zsd.network.model import PortGroup, Switch
from zsd.network.nics import KIND_NIC, NicRecord, decode_all
from zsd.network.records import KIND_PORT_GROUP, KIND_SWITCH

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _hostname(vm: str) -> str:
    """The VM's name where it is a DNS label (VM names may hold '.' and '_')."""
    return vm if _LABEL.fullmatch(vm) else ""


def _split(addresses: Sequence[str]) -> tuple[str, str]:
    v4 = next((a for a in addresses if ipaddress.ip_address(a).version == 4), "")
    v6 = next((a for a in addresses if ipaddress.ip_address(a).version == 6), "")
    return v4, v6


def scopes(
    *,
    host: str,
    switches: Sequence[Switch],
    port_groups: Sequence[PortGroup],
    nics: Sequence[NicRecord],
    vms: Sequence[VmRecord],
) -> list[DhcpScope]:
    """This host's DHCP scopes (a pure function of the cluster state)."""
    by_switch = {s.name: s for s in switches}
    user = {nic: vm for vm in vms for nic in vm.nics}
    out = []
    for pg in sorted(port_groups, key=lambda g: g.key):
        switch = by_switch.get(pg.switch)
        v4 = next((s for s in pg.subnets if s.network.version == 4), None)
        if switch is None or not switch.spans(host) or not pg.dhcp or v4 is None:
            continue
        v6 = next((s for s in pg.subnets if s.network.version == 6), None)
        here: list[DhcpNic] = []
        elsewhere: list[DnsRecord] = []
        for nic in sorted((n for n in nics if n.port_group == pg.key), key=lambda n: n.name):
            vm = user.get(nic.name)
            ipv4, ipv6 = _split(nic.addresses)
            name = _hostname(vm.name) if vm is not None else ""
            if vm is not None and vm.host == host:
                here.append(DhcpNic(mac=nic.mac, ipv4=ipv4, ipv6=ipv6 if v6 else "", hostname=name))
            elif name:
                elsewhere.append(DnsRecord(hostname=name, ipv4=ipv4, ipv6=ipv6))
        names = [n.hostname for n in here if n.hostname] + [r.hostname for r in elsewhere]
        duplicated = {n for n in names if names.count(n) > 1}
        out.append(
            DhcpScope(
                port_group=pg.key,
                bridge=pg.bridge,
                uplink=pg.vxlan_link if switch.kind == "vxlan" else pg.vlan_link,
                ipv4=Ipv4Subnet(cidr=v4.cidr, gateway=v4.gateway),
                ipv6=Ipv6Subnet(cidr=v6.cidr) if v6 is not None else None,
                dns_servers=pg.dns_servers,
                domain=pg.domain,
                mtu=switch.mtu,
                # A VM with two NICs in one port group: its name only once in DNS.
                nics=tuple(n if n.hostname not in duplicated else _nameless(n) for n in here),
                dns_records=tuple(r for r in elsewhere if r.hostname not in duplicated),
            )
        )
    return out


def _nameless(nic: DhcpNic) -> DhcpNic:
    return DhcpNic(mac=nic.mac, ipv4=nic.ipv4, ipv6=nic.ipv6)


class DhcpReconciler:
    def __init__(
        self, *, control: ClusterControl, host: str, manager: DhcpManager, resync: float = 30.0
    ) -> None:
        self._control = control
        self._host = host
        self._manager = manager
        self._resync = resync
        self.problem = ""

    def desired(self) -> list[DhcpScope]:
        cache = self._control.replica.cache
        return scopes(
            host=self._host,
            switches=records.switches(cache.list(KIND_SWITCH)),
            port_groups=records.port_groups(cache.list(KIND_PORT_GROUP)),
            nics=decode_all(cache.list(KIND_NIC)),
            vms=[VmRecord.decode(r.data) for r in cache.list(KIND_VM)],
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await follow_state(self._control.replica, self._apply, resync=self._resync, failed=self._failed)

    async def _apply(self) -> bool:
        # Level-triggered: the service changes only what differs (a namespace or
        # dnsmasq removed behind zsd's back comes back on the next round).
        await self._manager.apply(self.desired())
        self.problem = ""
        return True

    def _failed(self, e: Exception) -> None:
        if str(e) != self.problem:
            log.exception("DHCP: serving the port groups failed", exc_info=e)
        self.problem = str(e)
