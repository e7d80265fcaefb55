"""The cluster as this host sees it. Until the control-plane issue lands this is
a cluster of one: this host is its only member and its leader."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from zsd.cluster.identity import ClusterIdentity, HostIdentity
from zsd.cluster.leadership import LeadershipState
from zsd.errors import NotFound
from zsd.host.inventory import Inventory
from zsd.host.model import HostFacts


class HostState(enum.Enum):
    READY = "ready"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, kw_only=True)
class HostRecord:
    name: str
    host_id: int
    uid: str
    address: str
    state: HostState
    state_reasons: tuple[str, ...]
    facts: HostFacts
    zsd_version: str
    started_at: float


@dataclass(frozen=True, kw_only=True)
class MemberRecord:
    host: str
    host_id: int
    address: str
    state: MemberState


@dataclass(frozen=True, kw_only=True)
class LeaderRecord:
    host: str
    epoch: int
    since: float


@dataclass(frozen=True, kw_only=True)
class ClusterRecord:
    uid: str
    display_name: str
    created: float
    members: tuple[MemberRecord, ...]
    leader: LeaderRecord


class LocalCluster:
    """Reads (``host``, ``hosts``, ``cluster``, ``address``) are safe from any thread:
    they touch only immutable values (identities, config strings, the inventory's
    current ``HostFacts``) that trio replaces wholesale, never mutates in place. The
    API thread relies on this to serve reads without a hop into trio."""

    def __init__(
        self,
        *,
        host_name: str,
        address: str,
        host_identity: HostIdentity,
        cluster_identity: ClusterIdentity,
        inventory: Inventory,
        version: str,
        leadership: Callable[[], LeadershipState] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # None: the embedded cluster of one, which has no lease and leads itself.
        self._leadership = leadership
        self.host_name = host_name
        self._address = address
        self._host = host_identity
        self._cluster = cluster_identity
        self._inventory = inventory
        self._version = version
        self._clock = clock
        self._started = clock()

    @property
    def address(self) -> str:
        return self._address or _first_global_address(self._inventory.facts) or "127.0.0.1"

    def host(self, host: str) -> HostRecord:
        """``host`` is the {host} of a resource name; "-" is this host."""
        if host not in ("-", self.host_name):
            raise NotFound(f"host 'hosts/{host}' is not a member of this cluster", field="name")
        facts = self._inventory.facts
        return HostRecord(
            name=self.host_name,
            host_id=self._host.host_id,
            uid=self._host.uid,
            address=self.address,
            state=HostState.DEGRADED if facts.problems else HostState.READY,
            state_reasons=facts.problems,
            facts=facts,
            zsd_version=self._version,
            started_at=self._started,
        )

    def hosts(self) -> list[HostRecord]:
        return [self.host(self.host_name)]

    def cluster(self) -> ClusterRecord:
        me = MemberRecord(
            host=self.host_name, host_id=self._host.host_id, address=self.address, state=MemberState.ALIVE
        )
        return ClusterRecord(
            uid=self._cluster.uid,
            display_name=self._cluster.name,
            created=self._cluster.created,
            members=(me,),
            leader=self._leader(),
        )

    def _leader(self) -> LeaderRecord:
        if self._leadership is None:
            return LeaderRecord(host=self.host_name, epoch=1, since=self._started)
        state = self._leadership()
        if state.leading:
            return LeaderRecord(host=self.host_name, epoch=state.epoch, since=state.since_wall)
        # Other members' names arrive with membership (SWIM) and the follower cache.
        host = f"host-id-{state.leader_host_id}" if state.leader_host_id is not None else ""
        return LeaderRecord(host=host, epoch=state.epoch, since=state.since_wall)


def _first_global_address(facts: HostFacts) -> str:
    for nic in facts.nics:
        for cidr in nic.addresses:
            ip = cidr.split("/")[0]
            if ":" not in ip and not ip.startswith(("127.", "169.254.")):
                return ip
    return ""
