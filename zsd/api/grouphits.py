"""A security group's hit counters, gathered from the hosts that count them.

Each host's kernel counts the packets of the NICs that host runs, so a group's
counters are spread over the hosts of its NICs' VMs. The serving host asks each of
them at once and sums the answers. Every host asked gets ``HOST_DEADLINE`` (or
what is left of the call's own deadline, if less): reading the counters is one
netlink dump (~130 ms for 10 000 rules), so a host silent for 2 s is stuck or cut
off, and the operator is better served by the others' counters than by a timeout.
A host that does not answer in time, answers with an error, or that gossip
already reports gone is listed as missing with why, never dropped silently, and
the call succeeds with what came back.

``collect`` runs on the API thread's asyncio loop, where the peer channels live; a
TaskGroup plays the part of a trio nursery there (every host's call ends before
``collect`` returns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from zsd.cluster.control import HostView
from zsd.compute.records import VmRecord
from zsd.errors import ZsdError
from zsd.network.nics import NicRecord
from zsd.network.secgroups.hostmodel import HitCount, MembersRuleRef, RuleRef

HOST_DEADLINE = 2.0
"""Seconds each host has to answer with its counters."""
MEMBERS_PRIORITY = -1
"""The priority that stands for a group's built-in members rule."""
GONE = frozenset({"dead", "left"})
"""Gossip states of hosts that are not asked (they cannot answer)."""
_MARGIN = 0.2
# Kept from the call's own deadline to encode and send the answer: a call that
# fails with DEADLINE_EXCEEDED would lose what the other hosts counted.


@dataclass(frozen=True, kw_only=True)
class Hit:
    """What one rule decided in one direction (packets and their bytes)."""

    priority: int
    """The rule's priority; ``MEMBERS_PRIORITY``: the built-in members rule."""
    direction: str
    packets: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class HostHits:
    host: str
    hits: tuple[Hit, ...]


@dataclass(frozen=True, kw_only=True)
class Missing:
    """A host whose counters are not in the sum, and why."""

    host: str
    reason: str
    """DEADLINE_EXCEEDED, HOST_DOWN, or the reason of the error the host answered."""
    message: str


@dataclass(frozen=True, kw_only=True)
class GroupHits:
    counted: tuple[HostHits, ...]
    """By host name."""
    missing: tuple[Missing, ...]
    """By host name."""

    @property
    def total(self) -> tuple[Hit, ...]:
        return summed(self.counted)


Ask = Callable[[str, float], Awaitable[tuple[Hit, ...]]]
"""(host, timeout) -> that host's counters of the group; a ZsdError when it cannot tell."""


def _order(hit: Hit) -> tuple[int, str]:
    return hit.priority, hit.direction


def group_hits(counts: Iterable[HitCount], group: str) -> tuple[Hit, ...]:
    """``group``'s counters among all of one host's (which count every group it
    enforces and each NIC's default policy), by priority, then direction."""
    hits = [
        Hit(
            priority=c.ref.priority if isinstance(c.ref, RuleRef) else MEMBERS_PRIORITY,
            direction=c.ref.direction.value,
            packets=c.packets,
            bytes=c.bytes,
        )
        for c in counts
        if isinstance(c.ref, RuleRef | MembersRuleRef) and c.ref.group == group
    ]
    return tuple(sorted(hits, key=_order))


def summed(hosts: Iterable[HostHits]) -> tuple[Hit, ...]:
    """The counters of ``hosts`` added up per (priority, direction)."""
    totals: dict[tuple[int, str], tuple[int, int]] = {}
    for host in hosts:
        for hit in host.hits:
            packets, nbytes = totals.get(_order(hit), (0, 0))
            totals[_order(hit)] = (packets + hit.packets, nbytes + hit.bytes)
    return tuple(
        Hit(priority=priority, direction=direction, packets=packets, bytes=nbytes)
        for (priority, direction), (packets, nbytes) in sorted(totals.items())
    )


def counting_hosts(nics: Iterable[NicRecord], users: Mapping[str, VmRecord], group: str) -> tuple[str, ...]:
    """The hosts that count ``group``: those running a VM with a NIC in it
    (``users``: NIC name -> the VM record listing it), sorted."""
    return tuple(sorted({users[n.name].host for n in nics if group in n.security_groups and n.name in users}))


def member_states(views: Iterable[HostView]) -> dict[str, str]:
    """Every member -> its gossip state as this host sees it ("" when unknown)."""
    return {v.entry.name: v.gossip or "" for v in views}


def per_host_timeout(remaining: float | None, *, limit: float = HOST_DEADLINE) -> float:
    """How long each host may take: ``limit``, or less when the call's deadline
    (``remaining`` seconds away; None: none) comes sooner."""
    if remaining is None:
        return limit
    return max(0.0, min(limit, remaining - _MARGIN))


async def collect(
    hosts: Sequence[str], ask: Ask, *, timeout: float, gossip: Mapping[str, str] | None = None
) -> GroupHits:
    """Asks every host of ``hosts`` at once (``ask``, each within ``timeout``
    seconds) except those ``gossip`` (host -> state) says are gone."""
    counted: list[HostHits] = []
    missing: list[Missing] = []
    states = gossip or {}

    async def one(host: str) -> None:
        try:
            # ask gets the timeout for its own deadlines (gRPC's); wait_for also
            # bounds whatever it waits for before them.
            hits = await asyncio.wait_for(ask(host, timeout), timeout)
        except TimeoutError:
            missing.append(
                Missing(host=host, reason="DEADLINE_EXCEEDED", message=f"no answer within {timeout:g} s")
            )
        except ZsdError as e:
            missing.append(Missing(host=host, reason=e.reason, message=e.message))
        else:
            counted.append(HostHits(host=host, hits=hits))

    async with asyncio.TaskGroup() as tasks:
        for host in dict.fromkeys(hosts):
            state = states.get(host, "")
            if state in GONE:
                missing.append(
                    Missing(host=host, reason="HOST_DOWN", message=f"gossip says host {host} is {state}")
                )
            else:
                tasks.create_task(one(host))
    return GroupHits(
        counted=tuple(sorted(counted, key=lambda h: h.host)),
        missing=tuple(sorted(missing, key=lambda m: m.host)),
    )
