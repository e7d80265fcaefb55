"""SWIM membership with Lifeguard: who is alive in the cluster, and their metadata.

Membership is not authority: a member declared dead here is only *suspected*
gone for fencing and HA until sanlock agrees (see DESIGN.md).

Layout (one job per module; only :mod:`.udp` does I/O):

- ``member``     value types: Address, MemberState, HostMeta, Member
- ``config``     SwimConfig and its LAN / local profiles
- ``messages``   the protocol messages as typed values
- ``codec``      their versioned wire format (stdlib struct), CodecError
- ``suspicion``  Lifeguard's dynamic suspicion timeout
- ``awareness``  Lifeguard's local health score
- ``broadcast``  the queue of updates piggy-backed on packets
- ``table``      the member table: records, random picks, probe order
- ``node``       SwimNode, the sans-IO state machine tying it together
- ``transport``  what the core outputs (sends, events) and the Transport interface
- ``sim``        a simulated network in virtual time (tests, benchmarks)
- ``udp``        UdpNode: the core on real UDP/TCP sockets under trio
"""

from zsd.cluster.swim.codec import CodecError
from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, Capacity, HostMeta, Member, MemberState
from zsd.cluster.swim.node import SwimNode
from zsd.cluster.swim.transport import (
    EventKind,
    MemberEvent,
    Output,
    SendPacket,
    SendStream,
    Transport,
    dispatch,
)

__all__ = [
    "Address",
    "Capacity",
    "CodecError",
    "EventKind",
    "HostMeta",
    "Member",
    "MemberEvent",
    "MemberState",
    "Output",
    "SendPacket",
    "SendStream",
    "SwimConfig",
    "SwimNode",
    "Transport",
    "dispatch",
]
