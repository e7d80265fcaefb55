"""A simulated network with virtual time: many sans-IO members in one process.

A discrete-event scheduler (one heap of timestamped events) moves datagrams and
stream frames between endpoints, with configurable loss, delay and jitter,
partitions and crashed endpoints, and calls each endpoint's ``tick`` exactly
when its ``next_deadline`` comes. Nothing sleeps, and a seeded run is
reproducible event for event.

This is test infrastructure kept as real, tested code (like ``trio.testing``):
unit tests, the 1000-member benchmark and experiments all use it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, Member, MemberState
from zsd.cluster.swim.node import SwimNode
from zsd.cluster.swim.transport import MemberEvent, Output, SendPacket, SendStream

_TIMER, _PACKET, _STREAM = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class LinkConditions:
    """How every link behaves (one setting for the whole network)."""

    loss: float = 0.0  # probability that a datagram (or a stream segment) is lost
    delay: float = 0.0005  # one-way latency in seconds
    jitter: float = 0.0  # plus a uniform random [0, jitter)
    # A stream is TCP: a lost segment costs a retransmission timeout (Linux's
    # minimum is 200 ms, doubling per retry) instead of losing the message.
    stream_rto: float = 0.2
    stream_max_retries: int = 5


class Endpoint(Protocol):
    """What the network drives; :class:`SwimNode` is one."""

    address: Address

    def handle_packet(self, src: Address, data: bytes, now: float) -> list[Output]: ...

    def handle_stream(self, src: Address, data: bytes, now: float) -> list[Output]: ...

    def tick(self, now: float) -> list[Output]: ...

    def next_deadline(self) -> float: ...


class NetStats:
    __slots__ = (
        "blocked",
        "delivered",
        "lost",
        "sent",
        "streams_delivered",
        "streams_dropped",
        "streams_sent",
    )

    def __init__(self) -> None:
        self.sent = 0  # datagrams handed to the network
        self.lost = 0  # dropped by random loss
        self.blocked = 0  # dropped by a partition or a crashed endpoint
        self.delivered = 0
        self.streams_sent = 0
        self.streams_delivered = 0
        self.streams_dropped = 0


EventHook = Callable[[float, Address, MemberEvent], None]


class SimNetwork:
    def __init__(
        self,
        *,
        rng: random.Random,
        conditions: LinkConditions | None = None,
        start: float = 0.0,
        on_event: EventHook | None = None,
    ) -> None:
        self.now = start
        self.conditions = conditions or LinkConditions()
        self.stats = NetStats()
        self.on_event = on_event
        self._rng = rng
        self._endpoints: dict[Address, Endpoint] = {}
        self._down: set[Address] = set()
        self._group: dict[Address, int] = {}
        self._queue: list[tuple[float, int, int, Address, Address | None, bytes]] = []
        self._ids = itertools.count()
        self._wake: dict[Address, float] = {}

    # -- topology -----------------------------------------------------------------------

    def add(self, endpoint: Endpoint) -> None:
        """Attach ``endpoint`` (replacing a crashed one at the same address: a restart)."""
        self._endpoints[endpoint.address] = endpoint
        self._down.discard(endpoint.address)
        self._wake.pop(endpoint.address, None)
        self._schedule_wake(endpoint)

    def crash(self, address: Address) -> None:
        """Stop the endpoint dead: no ticks, everything to it is dropped."""
        self._down.add(address)

    def is_up(self, address: Address) -> bool:
        return address in self._endpoints and address not in self._down

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: each group talks only within itself; addresses named
        in no group form one more group together."""
        self._group = {address: index for index, group in enumerate(groups, 1) for address in group}

    def heal(self) -> None:
        self._group = {}

    def blocked(self, a: Address, b: Address) -> bool:
        return self._group.get(a, 0) != self._group.get(b, 0)

    # -- traffic ------------------------------------------------------------------------

    def apply(self, source: Address, outputs: Iterable[Output]) -> None:
        """Carry out what an endpoint returned (also for calls a test makes itself,
        e.g. ``net.apply(a, node.join(seeds, net.now))``)."""
        hook = self.on_event
        for out in outputs:
            if isinstance(out, SendPacket):
                self.send_packet(source, out.to, out.payload)
            elif isinstance(out, SendStream):
                self.send_stream(source, out.to, out.payload)
            elif hook is not None:
                hook(self.now, source, out)
        endpoint = self._endpoints.get(source)
        if endpoint is not None:
            self._schedule_wake(endpoint)

    def send_packet(self, source: Address, to: Address, payload: bytes) -> None:
        stats = self.stats
        stats.sent += 1
        if self._group and self.blocked(source, to):
            stats.blocked += 1
            return
        c = self.conditions
        rng = self._rng
        if c.loss and rng.random() < c.loss:
            stats.lost += 1
            return
        delay = c.delay + (rng.random() * c.jitter if c.jitter else 0.0)
        heapq.heappush(self._queue, (self.now + delay, next(self._ids), _PACKET, to, source, payload))

    def send_stream(self, source: Address, to: Address, payload: bytes) -> None:
        self.stats.streams_sent += 1
        if self._group and self.blocked(source, to):
            self.stats.streams_dropped += 1
            return
        c = self.conditions
        rng = self._rng
        # Handshake plus data: three one-way trips, then retransmissions for loss.
        delay = sum(c.delay + rng.random() * c.jitter for _ in range(3))
        for attempt in range(c.stream_max_retries + 1):
            if attempt == c.stream_max_retries:
                self.stats.streams_dropped += 1  # the sender's TCP gives up
                return
            if not (c.loss and rng.random() < c.loss):
                break
            delay += c.stream_rto * 2**attempt
        heapq.heappush(self._queue, (self.now + delay, next(self._ids), _STREAM, to, source, payload))

    def transport(self, source: Address) -> SimTransport:
        """A :class:`~zsd.cluster.swim.transport.Transport` sending as ``source``."""
        return SimTransport(self, source)

    # -- the scheduler ------------------------------------------------------------------

    def _schedule_wake(self, endpoint: Endpoint) -> None:
        when = endpoint.next_deadline()
        if when < self._wake.get(endpoint.address, math.inf):
            self._wake[endpoint.address] = when
            heapq.heappush(self._queue, (when, next(self._ids), _TIMER, endpoint.address, None, b""))

    def run_until(self, until: float) -> None:
        """Process every event up to virtual time ``until`` (then ``now == until``)."""
        queue = self._queue
        endpoints, down, wake = self._endpoints, self._down, self._wake
        while queue and queue[0][0] <= until:
            when, _, kind, to, source, payload = heapq.heappop(queue)
            self.now = when
            endpoint = endpoints.get(to)
            if endpoint is None or to in down:
                if kind == _PACKET:
                    self.stats.blocked += 1
                elif kind == _STREAM:
                    self.stats.streams_dropped += 1
                continue
            if kind == _TIMER:
                if wake.get(to) != when:
                    continue  # superseded by an earlier wake-up
                del wake[to]
                outputs = endpoint.tick(when)
            else:
                assert source is not None
                if self._group and self.blocked(source, to):  # partitioned while in flight
                    if kind == _PACKET:
                        self.stats.blocked += 1
                    else:
                        self.stats.streams_dropped += 1
                    continue
                if kind == _PACKET:
                    self.stats.delivered += 1
                    outputs = endpoint.handle_packet(source, payload, when)
                else:
                    self.stats.streams_delivered += 1
                    outputs = endpoint.handle_stream(source, payload, when)
            self.apply(to, outputs)
        self.now = max(self.now, until)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)


class SimTransport:
    """Sends as one endpoint through a :class:`SimNetwork`."""

    def __init__(self, network: SimNetwork, source: Address) -> None:
        self._network = network
        self._source = source

    def send_packet(self, to: Address, payload: bytes) -> None:
        self._network.send_packet(self._source, to, payload)

    def send_stream(self, to: Address, payload: bytes) -> None:
        self._network.send_stream(self._source, to, payload)


# -- SWIM clusters on the simulated network -------------------------------------------------


def sim_address(index: int) -> Address:
    return Address(f"node{index}", 7946)


def sim_name(index: int) -> str:
    return f"node{index}"


def start_cluster(
    network: SimNetwork,
    *,
    size: int,
    config: SwimConfig,
    seed: int,
    warm: bool = False,
) -> list[SwimNode]:
    """``size`` members named ``node0..``; ``warm`` starts them all knowing each
    other (as after reading the host table), otherwise each joins through node0."""
    known: Sequence[Member] = ()
    if warm:
        known = [
            Member(
                name=sim_name(i),
                address=sim_address(i),
                incarnation=0,
                state=MemberState.ALIVE,
                state_since=network.now,
                meta=HostMeta(host_id=i + 1),
            )
            for i in range(size)
        ]
    nodes = [
        SwimNode(
            config=config,
            name=sim_name(i),
            address=sim_address(i),
            meta=HostMeta(host_id=i + 1),
            rng=random.Random(seed * 1_000_003 + i),
            now=network.now,
            known=known,
        )
        for i in range(size)
    ]
    for node in nodes:
        network.add(node)
    if not warm:
        for node in nodes[1:]:
            network.apply(node.address, node.join([nodes[0].address], network.now))
    return nodes
