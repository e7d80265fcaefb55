"""What the sans-IO core asks the outside world to do, and the interface that does it.

The core (:class:`~zsd.cluster.swim.node.SwimNode`) returns a list of outputs from
every call. Sends go to a :class:`Transport`; membership events go to whoever
cares (the daemon's host table, a test, the simulator's recorder).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from zsd.cluster.swim.member import Address, Member


@dataclass(frozen=True, kw_only=True, slots=True)
class SendPacket:
    """Best effort, unordered, may be lost or duplicated: a UDP datagram."""

    to: Address
    payload: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class SendStream:
    """Reliable one-shot message (a short TCP connection): either delivered whole or
    not at all; no reply channel - answers are new stream messages."""

    to: Address
    payload: bytes


class EventKind(enum.Enum):
    JOINED = "joined"  # first seen, or alive again after being dead/left
    UPDATED = "updated"  # alive again after suspicion, or new address/metadata
    SUSPECTED = "suspected"
    FAILED = "failed"  # declared dead
    LEFT = "left"
    FORGOTTEN = "forgotten"  # dropped from the table after the retention time


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberEvent:
    """A change in this node's view of another member (never about itself)."""

    kind: EventKind
    member: Member


Output = SendPacket | SendStream | MemberEvent


class Transport(Protocol):
    """Carries encoded frames to other members. Both calls must return at once
    (queue or drop, never block): the core runs on the caller's event loop.

    Implementations: the UDP/TCP adapter (:mod:`.udp`) and the simulator (:mod:`.sim`).
    """

    def send_packet(self, to: Address, payload: bytes) -> None:
        """Send one datagram; silently dropping it is allowed."""

    def send_stream(self, to: Address, payload: bytes) -> None:
        """Deliver one frame reliably, or give up silently after the stream timeout."""


def dispatch(outputs: Iterable[Output], transport: Transport) -> list[MemberEvent]:
    """Hand the sends to ``transport`` and return the events, in order."""
    events: list[MemberEvent] = []
    for out in outputs:
        if isinstance(out, SendPacket):
            transport.send_packet(out.to, out.payload)
        elif isinstance(out, SendStream):
            transport.send_stream(out.to, out.payload)
        else:
            events.append(out)
    return events
