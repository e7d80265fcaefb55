"""Revoking access ends connections: after a ruleset is applied, the conntrack
entries of this host's NICs that the new policy would not admit as new are
deleted, and only those.

Without this, ``ct state established`` would keep every connection opened under
an older policy alive for as long as it lasts: a removed rule, a group detached
from a NIC, a default changed to deny, a member leaving a remote group would
stop new connections only. The next packet of a deleted connection finds no
entry; conntrack would pick it up as new, and the NIC chains drop new TCP that
is not a SYN (see :mod:`compiler`), so the connection ends; UDP and ICMP are
judged again as new. (Except during a NIC's pickup window after it arrives on the
host, :mod:`pickup`: then the still-allowed side can revive it.)

Only NICs whose policy may have changed since the last sweep are looked at (their
groups' rules, their defaults, the members of the groups their rules point at),
so a change touching no policy costs nothing. Their entries are read with
kernel-filtered dumps per address when few NICs changed, or whole zones (their
port groups') when many did (:func:`plan_reads`: a whole-zone dump costs ~0.25 ms
per entry in Python, a filtered one ~5 ms whatever the table holds). Entries in
zones that are not a zsd NIC's, or whose ends are no zsd NIC's addresses, are
never touched. The first sweep (``previous`` None: zsd just started, the policy
may have changed while it was down) looks at every NIC.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from zsd.network.secgroups.admission import Admission, Flow
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic


class ConntrackTable(Protocol):
    """One host's (one network namespace's) connection tracking table."""

    def size(self) -> int:
        """Entries tracked in every zone."""
        ...

    def flows(self, zones: Collection[int]) -> Iterable[Flow]:
        """Every tracked connection in these zones."""
        ...

    def flows_of(self, zone: int, address: str) -> Iterable[Flow]:
        """The connections in ``zone`` whose original source or destination is
        ``address`` (the kernel filters; each call walks the whole table once per
        side)."""
        ...

    def delete(self, flow: Flow) -> bool:
        """Deletes the connection (by zone and original tuple); False if it was gone."""
        ...

    def close(self) -> None: ...


ENTRY_SECONDS = 0.25e-3
"""What reading one entry of a whole-zone dump costs (pyroute2 parses every
attribute of it; measured 0.24 ms)."""
ADDRESS_SECONDS = 10e-3
"""What the two kernel-filtered dumps of one address cost (measured 4.5-9 ms each
with 10 000 entries: the kernel still walks the table, Python parses only the matches)."""


@dataclass(frozen=True, kw_only=True)
class Reads:
    """What a sweep reads: whole zones, or only the entries of some addresses (zone, address)."""

    zones: tuple[int, ...] = ()
    addresses: tuple[tuple[int, str], ...] = ()


def plan_reads(nics: Collection[HostNic], zones: Mapping[str, int], *, table_size: int) -> Reads:
    """Filtered dumps per address when they cost less than parsing the zones whole
    (a few NICs changed), whole zones otherwise (the first sweep, a group every NIC
    uses). The table's size stands in for the zones' (an upper bound)."""
    addresses = sorted({(_zone(n, zones), a) for n in nics for a in (*n.ipv4, *n.ipv6)})
    if len(addresses) * ADDRESS_SECONDS < table_size * ENTRY_SECONDS:
        return Reads(addresses=tuple(addresses))
    return Reads(zones=tuple(sorted({_zone(n, zones) for n in nics})))


def _zone(nic: HostNic, zones: Mapping[str, int]) -> int:
    return zones.get(nic.bridge, 0) if nic.bridge else 0


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """What a sweep found before deleting anything: the entries the policy it
    judged with does not admit."""

    firewall: HostFirewall
    """The policy judged with."""
    nics: int
    seen: int
    doomed: tuple[Flow, ...]
    filtered: bool
    """Read with kernel-filtered dumps (else whole zones)."""
    seconds: float


@dataclass(frozen=True, kw_only=True)
class SweepReport:
    nics: int
    """NICs whose connections were judged."""
    seen: int
    """Entries read from the zones of those NICs."""
    deleted: int
    seconds: float
    spared: int = 0
    """Entries the judged policy rejects but a newer one applied meanwhile admits."""
    filtered: bool = False
    """Read with kernel-filtered dumps per address (else whole zones)."""


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


def judge(
    table: ConntrackTable,
    *,
    firewall: HostFirewall,
    zones: Mapping[str, int],
    ports: Collection[str],
) -> Judgement:
    """The entries of the NICs ``ports`` that ``firewall`` no longer admits (read
    only: a netlink dump must not be interleaved with requests)."""
    start = time.perf_counter()
    judged = [n for n in firewall.nics if n.port in ports]
    if not judged:
        return Judgement(firewall=firewall, nics=0, seen=0, doomed=(), filtered=False, seconds=0.0)
    reads = plan_reads(judged, zones, table_size=table.size())
    admission = Admission(firewall, zones)
    seen = 0
    doomed = []
    for flow in _read(table, reads):
        seen += 1
        checks = admission.checks(flow)
        if not any(c.nic.port in ports for c in checks):
            continue
        if not all(admission.passes(c, flow) for c in checks):
            doomed.append(flow)
    return Judgement(
        firewall=firewall,
        nics=len(judged),
        seen=seen,
        doomed=tuple(doomed),
        filtered=bool(reads.addresses),
        seconds=time.perf_counter() - start,
    )


def _read(table: ConntrackTable, reads: Reads) -> Iterator[Flow]:
    if reads.zones:
        yield from table.flows(reads.zones)
        return
    given: set[Flow] = set()
    for zone, address in reads.addresses:
        for flow in table.flows_of(zone, address):
            if flow not in given:  # a connection between two judged NICs shows up twice
                given.add(flow)
                yield flow


def delete(
    table: ConntrackTable, judgement: Judgement, *, latest: HostFirewall, zones: Mapping[str, int]
) -> SweepReport:
    """Deletes the doomed entries that ``latest`` (the policy the kernel enforces
    now, with its ``zones``) does not admit either: a policy applied while the
    sweep was reading may admit again what the judged one did not. The caller
    keeps applies out while this runs."""
    start = time.perf_counter()
    recheck = judgement.firewall is not latest and judgement.firewall != latest
    admission = Admission(latest, zones) if recheck else None
    deleted = spared = 0
    for flow in judgement.doomed:
        if admission is not None and admission.admits(flow):
            spared += 1
        elif table.delete(flow):
            deleted += 1
    return SweepReport(
        nics=judgement.nics,
        seen=judgement.seen,
        deleted=deleted,
        spared=spared,
        filtered=judgement.filtered,
        seconds=judgement.seconds + time.perf_counter() - start,
    )


def sweep(
    table: ConntrackTable,
    *,
    firewall: HostFirewall,
    zones: Mapping[str, int],
    ports: Collection[str],
) -> SweepReport:
    """Deletes the entries of the NICs ``ports`` that ``firewall`` no longer admits."""
    found = judge(table, firewall=firewall, zones=zones, ports=ports)
    return delete(table, found, latest=firewall, zones=zones)


class Revoker:
    """Remembers the firewall it last swept for, so each sweep looks only at NICs
    whose policy changed since. If a sweep fails it is retried, against the same
    previous firewall, after the next apply.

    A sweep can run in two steps, :meth:`judge` (reading, the long part, while
    applies go on) and :meth:`finish` (deleting, with applies held off, against the
    latest policy applied). One sweep at a time."""

    def __init__(self) -> None:
        self._swept: HostFirewall | None = None

    def judge(self, table: ConntrackTable, *, firewall: HostFirewall, zones: Mapping[str, int]) -> Judgement:
        return judge(table, firewall=firewall, zones=zones, ports=changed_ports(self._swept, firewall))

    def finish(
        self,
        table: ConntrackTable,
        judgement: Judgement,
        *,
        latest: HostFirewall,
        zones: Mapping[str, int],
    ) -> SweepReport:
        report = delete(table, judgement, latest=latest, zones=zones)
        # what changed after the judged policy is judged by the next sweep
        self._swept = judgement.firewall
        return report

    def after_apply(
        self, table: ConntrackTable, *, firewall: HostFirewall, zones: Mapping[str, int]
    ) -> SweepReport:
        """Both steps at once, against ``firewall``."""
        return self.finish(
            table, self.judge(table, firewall=firewall, zones=zones), latest=firewall, zones=zones
        )
