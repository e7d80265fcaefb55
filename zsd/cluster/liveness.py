"""Whether a host is alive, from gossip *and* sanlock.

Gossip (SWIM) is fast but only says "I cannot reach it": a partition, an
overloaded host or a stopped zsd all look like a failure. Sanlock's host lease is
slow but authoritative: once a host's lease is DEAD it has stopped renewing for
``host_dead`` and its lease holders are gone, so its VMs' leases may be taken.
Fencing and HA therefore act on :func:`verdict`, which calls a host dead only
when sanlock does.

:class:`LeaseWatcher` keeps an up-to-date copy of sanlock's view for that.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import trio

from zsd.cluster.lease.authority import HostState, HostStatus
from zsd.cluster.swim.member import MemberState
from zsd.errors import InvalidArgument, ZsdError

log = logging.getLogger(__name__)


class Liveness(enum.Enum):
    """How the cluster treats a host."""

    ALIVE = "alive"
    """Gossip reaches it. Its lease may still be failing (FAIL): whatever needs
    working leases (placement of HA VMs) looks at the lease status too."""
    UNREACHABLE = "unreachable"
    """Gossip cannot reach it, but sanlock does not say it is gone: it may still run
    VMs. Report it; never fence it or restart its VMs elsewhere."""
    LEFT = "left"
    """It said goodbye (zsd stopped) or released its lease cleanly: expected absence."""
    DEAD = "dead"
    """Sanlock says its host lease expired: the only state HA and fencing act on."""


def verdict(gossip: MemberState | None, lease: HostStatus | None) -> Liveness:
    """Combine this host's gossip state for a member with its sanlock lease status.

    ``None`` means the source knows nothing about the host (gossip never met it or
    forgot it; no lease information yet). An UNKNOWN lease counts as no
    information. The rules, first match wins:

    ==========================  =======================  ===========
    gossip                      lease                    verdict
    ==========================  =======================  ===========
    any                         DEAD                     DEAD
    ALIVE                       not DEAD                 ALIVE
    LEFT                        not DEAD                 LEFT
    SUSPECT, DEAD, None         FREE                     LEFT
    SUSPECT, DEAD, None         LIVE, FAIL, UNKNOWN,     UNREACHABLE
                                None
    ==========================  =======================  ===========

    Notes on the less obvious rows:

    - gossip ALIVE with lease DEAD is DEAD: the host lost its storage, sanlock
      killed its lease holders and other hosts may take its leases, even though
      its zsd still answers.
    - gossip DEAD alone is never DEAD: it is a failed probe with a timeout, not
      proof; the host may be partitioned from us while still running its VMs.
    - lease FAIL (renewals failing, not yet dead) is not DEAD either: the host may
      recover, and until host_dead its leases cannot be taken anyway.
    - a free lease means the host left the lockspace cleanly, having released
      every lease, so a host gossip cannot reach counts as gone by choice.
    """
    if lease is HostStatus.DEAD:
        return Liveness.DEAD
    if gossip is MemberState.ALIVE:
        return Liveness.ALIVE
    if gossip is MemberState.LEFT or lease is HostStatus.FREE:
        return Liveness.LEFT
    return Liveness.UNREACHABLE


class HostStateSource(Protocol):
    """What :class:`LeaseWatcher` needs of an Authority."""

    async def host_states(self) -> Mapping[int, HostState]: ...


@dataclass(frozen=True, kw_only=True)
class LeaseView:
    """Sanlock's view of every host at one moment. Never mutated."""

    states: Mapping[int, HostStatus] = field(default_factory=lambda: MappingProxyType({}))
    """Host id -> status for every host id in use (free ids are absent)."""
    polled_at: float | None = None
    """When ``states`` was read (trio clock); None until the first successful poll."""
    stale_since: float | None = None
    """The first failed poll since the last success; None while polls succeed."""
    error: str = ""
    """The reason of the latest failure while stale."""

    @property
    def stale(self) -> bool:
        return self.stale_since is not None or self.polled_at is None

    def status(self, host_id: int) -> HostStatus | None:
        """One host's status for :func:`verdict`: FREE when a poll did not list it,
        None when no poll succeeded yet. Stale values are returned as they were."""
        if self.polled_at is None:
            return None
        return self.states.get(host_id, HostStatus.FREE)


class LeaseWatcher:
    """Polls the authority's host states; :attr:`view` is safe from any thread."""

    def __init__(self, authority: HostStateSource, *, interval: float = 2.0) -> None:
        if interval <= 0:
            raise InvalidArgument("must be > 0", field="interval")
        self._authority = authority
        self._interval = interval
        self._view = LeaseView()

    @property
    def view(self) -> LeaseView:
        return self._view

    @property
    def states(self) -> Mapping[int, HostStatus]:
        """The latest known states (possibly stale: see :attr:`view`)."""
        return self._view.states

    async def run(self, *, task_status: trio.TaskStatus[LeaseView] = trio.TASK_STATUS_IGNORED) -> None:
        """Polls until cancelled; ``started`` after the first poll, failed or not:
        right after joining, the authority has no answer for a renewal interval,
        and the daemon must not wait for that."""
        task_status.started(await self._poll())
        while True:
            await trio.sleep(self._interval)
            await self._poll()

    async def _poll(self) -> LeaseView:
        previous = self._view
        try:
            states = await self._authority.host_states()
        except ZsdError as e:
            if previous.stale_since is None:
                # Once per failure streak: a lease daemon that is down for an hour
                # would otherwise log every interval.
                log.warning("cannot read sanlock host states, keeping the last known: %s", e)
            view = LeaseView(
                states=previous.states,
                polled_at=previous.polled_at,
                stale_since=previous.stale_since if previous.stale_since is not None else trio.current_time(),
                error=e.reason,
            )
        else:
            if previous.stale_since is not None:
                log.info("sanlock host states readable again")
            view = LeaseView(
                states=MappingProxyType({host_id: s.status for host_id, s in states.items()}),
                polled_at=trio.current_time(),
            )
        self._view = view
        return view
