"""The protocol's messages as typed values. Encoding lives in :mod:`.codec`.

Packets (UDP) carry one or more of these: the first is the reason for the packet,
the rest are piggy-backed membership updates (alive/suspect/dead). Streams carry
one :class:`PushPull` (or a fallback :class:`Ping`/:class:`Ack`).
"""

from __future__ import annotations

from dataclasses import dataclass

from zsd.cluster.swim.member import Address, MemberState


@dataclass(frozen=True, kw_only=True, slots=True)
class Ping:
    seq: int
    target: str  # who the sender means to reach: a restarted process on a reused address must not ack
    source: str
    source_addr: Address  # where to ack; a stream's peer address is an ephemeral port


@dataclass(frozen=True, kw_only=True, slots=True)
class IndirectPing:
    """Ask a helper to ping ``target`` for us and relay the ack (SWIM's ping-req)."""

    seq: int
    target: str
    target_addr: Address
    source: str
    source_addr: Address
    nack: bool  # Lifeguard: helper answers Nack if the target stays silent


@dataclass(frozen=True, kw_only=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Nack:
    """A helper could not reach the target; proves the prober's own link works."""

    seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Alive:
    incarnation: int
    name: str
    address: Address
    meta: bytes  # encoded HostMeta; decoded only when it changed


@dataclass(frozen=True, kw_only=True, slots=True)
class Suspect:
    incarnation: int
    name: str
    source: str  # who suspects; distinct sources are Lifeguard confirmations


@dataclass(frozen=True, kw_only=True, slots=True)
class Dead:
    incarnation: int
    name: str
    source: str  # source == name means a graceful leave


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberRecord:
    name: str
    address: Address
    incarnation: int
    state: MemberState
    meta: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class PushPull:
    """Anti-entropy: the sender's full member table. A request (``reply=False``) is
    answered with the receiver's table; ``join`` marks the first exchange of a new node."""

    join: bool
    reply: bool
    source: str
    source_addr: Address
    members: tuple[MemberRecord, ...]


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull
