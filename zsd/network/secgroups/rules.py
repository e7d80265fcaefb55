"""What one security-group rule matches and does (typed, frozen; no policy here).

Checks live in :mod:`zsd.network.secgroups.validation`, rule lists in
:mod:`zsd.network.secgroups.group`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    INGRESS = "ingress"
    """Traffic towards the NIC (the VM receives it)."""
    EGRESS = "egress"
    """Traffic from the NIC (the VM sends it)."""


class EtherType(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class Protocol(StrEnum):
    ANY = "any"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"
    TCP = "tcp"
    UDP = "udp"


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


PORT_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP})
ICMP_PROTOCOLS = frozenset({Protocol.ICMP, Protocol.ICMPV6})


@dataclass(frozen=True, kw_only=True)
class PortRange:
    """Destination ports ``first``..``last`` (inclusive), 1..65535."""

    first: int
    last: int

    @classmethod
    def single(cls, port: int) -> PortRange:
        return cls(first=port, last=port)

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True, kw_only=True)
class IcmpMatch:
    """An ICMP or ICMPv6 type (0..255) and optionally its code (0..255; None: any)."""

    type: int
    code: int | None = None


@dataclass(frozen=True, kw_only=True)
class RuleSpec:
    """What a rule matches and does; its priority is its place in the group.

    ``remote_cidr`` / ``remote_group`` is the other end (the source for ingress,
    the destination for egress); neither means anywhere. ``port_range`` only on
    tcp/udp, ``icmp`` only on icmp (ipv4) / icmpv6 (ipv6)."""

    direction: Direction
    ethertype: EtherType = EtherType.IPV4
    protocol: Protocol = Protocol.ANY
    port_range: PortRange | None = None
    icmp: IcmpMatch | None = None
    remote_cidr: str | None = None
    remote_group: str | None = None
    action: Action = Action.ALLOW
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A rule in a group: its spec at ``priority`` (0 is evaluated first)."""

    priority: int
    spec: RuleSpec
