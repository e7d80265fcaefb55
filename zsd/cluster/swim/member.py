"""Plain values that describe a member: its address, state, incarnation and metadata.

Nothing here does I/O or knows the protocol; these are the types the rest of zsd sees.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Address(NamedTuple):
    """Where a member's gossip endpoint listens: UDP for packets, TCP (same port) for streams.

    ``host`` is an IP literal in production; the simulator uses any string. A named
    tuple rather than a dataclass because it is hashed for every simulated packet.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class MemberState(enum.IntEnum):
    """Gossip state of a member. The numeric values are on the wire: never renumber."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2  # everything from here on is "gone": hot paths compare ``state >= DEAD``
    LEFT = 3  # announced its own departure; never fenced, never suspected

    @property
    def is_gone(self) -> bool:
        return self >= MemberState.DEAD


@dataclass(frozen=True, kw_only=True, slots=True)
class Capacity:
    cpus: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class HostMeta:
    """What every member tells the others about itself, carried in its alive messages.

    Kept small (the encoded form must fit ``MAX_META_SIZE``) because it rides in UDP
    packets. The member's name is ``Member.name``; it is not repeated here. Pairs are
    tuples rather than dicts so the value stays immutable and hashable; use
    :meth:`label` / :meth:`port` to look one up.
    """

    host_id: int = 0
    addresses: tuple[str, ...] = ()
    ports: tuple[tuple[str, int], ...] = ()  # ("api", 7443), ("peer", 7444), ...
    capacity: Capacity = Capacity()
    labels: tuple[tuple[str, str], ...] = ()
    version: str = ""
    leader: str = ""  # name of the member this host believes is the leader, "" if none
    leader_epoch: int = 0  # the sanlock lease version that leader was seen with

    def label(self, key: str) -> str | None:
        return next((v for k, v in self.labels if k == key), None)

    def port(self, name: str) -> int | None:
        return next((p for n, p in self.ports if n == name), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """One member as this node currently believes it to be.

    ``state_since`` is in the clock of the node that holds this record (the ``now``
    its caller passes), so it is only comparable locally.
    """

    name: str
    address: Address
    incarnation: int
    state: MemberState
    state_since: float
    meta: HostMeta
