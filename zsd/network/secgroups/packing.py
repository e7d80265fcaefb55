"""Packing a run of same-action rules into few set lookups, keeping first-match order.

Within one group chain, a run of consecutive rules with the same action needs no
rule-by-rule evaluation: the packet either matches one of them (the run's verdict)
or none (on to the next run). So a run becomes a few *statements*, each one lookup
of the packet's key in an interval set of the rules' keys, each element counting
the packets its rule decides::

    ip saddr . meta l4proto . th dport @sg_web_in_1a2b3c4d  { 10.0.0.0/8 . 6 . 80-443, ... }

One statement holds the rules of one *shape*: family (4/6), kind (protocol only;
protocol + ports; ICMP type + code) and remote (a CIDR inside the key, or one remote
group whose member set is matched before the lookup).

Hit counters must go to the rule that first-match semantics picks, and interval
sets must not hold overlapping elements, so a rule only joins the latest statement
of its shape when it overlaps nothing in that statement or in any statement after
it; otherwise it opens a new statement at the end of the run. Every element then
sits after every earlier rule it overlaps: the first statement that matches a
packet holds exactly the lowest-priority matching rule. Runs of non-overlapping
rules (the common case) pack into at most one statement per shape, so a chain's
length follows the number of action changes and shapes, not the number of rules.
Remote-group rules are taken to overlap every address (membership changes without
a recompile).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

FULL_PROTO = (0, 255)
FULL_SUB = (0, 65535)


class Kind(Enum):
    PROTO = "proto"
    """Address and protocol (``any`` is the range 0-255)."""
    PORTS = "ports"
    """Address, tcp or udp, destination port range."""
    ICMP = "icmp"
    """Address, ICMP type and code; ``sub`` is type * 256 + code."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One rule's match, reduced to intervals."""

    family: int
    kind: Kind
    remote_group: str | None
    net: int
    """The remote CIDR's network as an integer (0 for a remote group)."""
    plen: int
    proto: tuple[int, int]
    sub: tuple[int, int]
    """Port range (PORTS) or ICMP type*256+code range (ICMP); FULL_SUB for PROTO."""
    counter: str
    """The id of the rule's counter (its element's, once compiled)."""

    @property
    def shape(self) -> tuple[int, Kind, str | None]:
        return (self.family, self.kind, self.remote_group)


class _Intervals:
    """Disjoint inclusive intervals, sorted."""

    __slots__ = ("his", "los")

    def __init__(self) -> None:
        self.los: list[int] = []
        self.his: list[int] = []

    def hits(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.los, hi) - 1
        return i >= 0 and self.his[i] >= lo

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self.los, lo)
        self.los.insert(i, lo)
        self.his.insert(i, hi)


@dataclass
class Statement:
    """Pieces of one shape that overlap each other nowhere, in one map lookup."""

    shape: tuple[int, Kind, str | None]
    pieces: list[Piece] = field(default_factory=list)
    # (plen, net) -> protocol (None for PROTO statements) -> intervals
    _buckets: dict[tuple[int, int], dict[int | None, _Intervals]] = field(default_factory=dict)
    _nets: dict[int, list[int]] = field(default_factory=dict)

    @property
    def family(self) -> int:
        return self.shape[0]

    @property
    def kind(self) -> Kind:
        return self.shape[1]

    @property
    def remote_group(self) -> str | None:
        return self.shape[2]

    def add(self, piece: Piece) -> None:
        key = (piece.plen, piece.net)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            bisect.insort(self._nets.setdefault(piece.plen, []), piece.net)
        if self.kind is Kind.PROTO:
            bucket.setdefault(None, _Intervals()).add(*piece.proto)
        else:
            bucket.setdefault(piece.proto[0], _Intervals()).add(*piece.sub)
        self.pieces.append(piece)

    def overlaps(self, piece: Piece) -> bool:
        if piece.family != self.family:
            return False
        for bucket in self._address_overlaps(piece):
            if self.kind is Kind.PROTO:
                if bucket[None].hits(*piece.proto):
                    return True
                continue
            for proto, intervals in bucket.items():
                if (
                    proto is not None
                    and piece.proto[0] <= proto <= piece.proto[1]
                    and intervals.hits(*piece.sub)
                ):
                    return True
        return False

    def _address_overlaps(self, piece: Piece) -> Iterator[dict[int | None, _Intervals]]:
        if self.remote_group is not None or piece.remote_group is not None:
            yield from self._buckets.values()
            return
        bits = 32 if piece.family == 4 else 128
        for plen, nets in self._nets.items():
            if plen <= piece.plen:  # a CIDR that contains the piece's
                bucket = self._buckets.get((plen, piece.net & _mask(plen, bits)))
                if bucket is not None:
                    yield bucket
            else:  # CIDRs inside the piece's
                last = piece.net | ((1 << (bits - piece.plen)) - 1)
                lo = bisect.bisect_left(nets, piece.net)
                hi = bisect.bisect_right(nets, last)
                for net in nets[lo:hi]:
                    yield self._buckets[(plen, net)]


def pack(run: Iterable[Piece]) -> list[Statement]:
    """The statements for one run (pieces in priority order), in evaluation order."""
    statements: list[Statement] = []
    latest: dict[tuple[int, Kind, str | None], int] = {}
    for piece in run:
        at = latest.get(piece.shape)
        if at is not None and not _overlaps_any(statements[at:], piece):
            statements[at].add(piece)
            continue
        statement = Statement(shape=piece.shape)
        statement.add(piece)
        latest[piece.shape] = len(statements)
        statements.append(statement)
    return statements


def _overlaps_any(statements: Sequence[Statement], piece: Piece) -> bool:
    return any(s.overlaps(piece) for s in statements)


def _mask(plen: int, bits: int) -> int:
    return ((1 << plen) - 1) << (bits - plen)
