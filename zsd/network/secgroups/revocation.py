"""Revoking access ends connections: after a ruleset is applied, the conntrack
entries of this host's NICs that the new policy would not admit as new are
deleted, and only those.

Without this, ``ct state established`` would keep every connection opened under
an older policy alive for as long as it lasts: a removed rule, a group detached
from a NIC, a default changed to deny, a member leaving a remote group would
stop new connections only. The next packet of a deleted connection finds no
entry; conntrack would pick it up as new, and the NIC chains drop new TCP that
is not a SYN (see :mod:`compiler`), so the connection ends; UDP and ICMP are
judged again as new.

Only NICs whose policy may have changed since the last sweep are looked at (their
groups' rules, their defaults, the members of the groups their rules point at),
and only the zones of their port groups are read, so a change touching no policy
costs nothing and a one-rule change reads only the zones of the NICs using the
group. Entries in zones that are not a zsd NIC's, or whose ends are no zsd NIC's
addresses, are never touched. The first sweep (``previous`` None: zsd just
started, the policy may have changed while it was down) looks at every NIC.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from zsd.network.secgroups.admission import Admission, Flow
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic


class ConntrackTable(Protocol):
    """One host's (one network namespace's) connection tracking table."""

    def flows(self, zones: Collection[int]) -> Iterable[Flow]:
        """Every tracked connection in these zones."""
        ...

    def delete(self, flow: Flow) -> bool:
        """Deletes the connection (by zone and original tuple); False if it was gone."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SweepReport:
    nics: int
    """NICs whose connections were judged."""
    seen: int
    """Entries read from the zones of those NICs."""
    deleted: int
    seconds: float


def changed_ports(previous: HostFirewall | None, current: HostFirewall) -> frozenset[str]:
    """Ports of ``current`` whose policy may admit less than under ``previous``
    (every port when there is no previous)."""
    if previous is None:
        return frozenset(n.port for n in current.nics)
    before = {n.port: n for n in previous.nics}
    groups = {
        name
        for name, group in current.groups.items()
        if not (previous.groups.get(name) is group or previous.groups.get(name) == group)
    }
    members = {
        name
        for name in {*previous.members, *current.members}
        if previous.members.get(name) != current.members.get(name)
    }
    out = set()
    for nic in current.nics:
        old = before.get(nic.port)
        if old is None or old != nic or _uses(current, nic, groups, members):
            out.add(nic.port)
    return frozenset(out)


def _uses(firewall: HostFirewall, nic: HostNic, groups: set[str], members: set[str]) -> bool:
    """Whether the NIC's policy depends on one of these changed groups or member lists."""
    for name in nic.groups:
        if name in groups:
            return True
        if members and not members.isdisjoint(firewall.groups[name].remote_groups()):
            return True
    return False


def sweep(
    table: ConntrackTable,
    *,
    firewall: HostFirewall,
    zones: Mapping[str, int],
    ports: Collection[str],
) -> SweepReport:
    """Deletes the entries of the NICs ``ports`` that ``firewall`` no longer admits."""
    start = time.perf_counter()
    judged = [n for n in firewall.nics if n.port in ports]
    if not judged:
        return SweepReport(nics=0, seen=0, deleted=0, seconds=time.perf_counter() - start)
    admission = Admission(firewall, zones)
    wanted = sorted({zones.get(n.bridge, 0) if n.bridge else 0 for n in judged})
    seen = deleted = 0
    doomed = []
    for flow in table.flows(wanted):
        seen += 1
        checks = admission.checks(flow)
        if not any(c.nic.port in ports for c in checks):
            continue
        if not all(admission.passes(c, flow) for c in checks):
            doomed.append(flow)
    # deleted after the dump: a netlink dump must not be interleaved with requests
    for flow in doomed:
        if table.delete(flow):
            deleted += 1
    return SweepReport(nics=len(judged), seen=seen, deleted=deleted, seconds=time.perf_counter() - start)


class Revoker:
    """Remembers the firewall it last swept for, so each sweep looks only at NICs
    whose policy changed since. If a sweep fails it is retried, against the same
    previous firewall, after the next apply."""

    def __init__(self) -> None:
        self._swept: HostFirewall | None = None

    def after_apply(
        self, table: ConntrackTable, *, firewall: HostFirewall, zones: Mapping[str, int]
    ) -> SweepReport:
        ports = changed_ports(self._swept, firewall)
        report = sweep(table, firewall=firewall, zones=zones, ports=ports)
        self._swept = firewall
        return report
