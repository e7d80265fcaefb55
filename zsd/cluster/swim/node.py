"""The SWIM + Lifeguard state machine of one member, without I/O.

Drive it with three calls and act on what they return (sends and events, see
:mod:`.transport`):

- ``handle_packet(src, data, now)`` / ``handle_stream(src, data, now)`` for every
  datagram / stream frame received;
- ``tick(now)`` whenever ``now >= next_deadline()``.

``now`` is any monotonic clock in seconds (virtual in the simulator); randomness
comes from the ``random.Random`` passed in, so a seeded run is reproducible.

Protocol, per probe interval (scaled by local health):
ping one member (round-robin over a shuffled order) -> no ack within
``probe_timeout``: ask ``indirect_checks`` helpers to ping it (they nack if it stays
silent) and ping it over the stream channel -> no ack by the end of the interval:
suspect it. A suspicion becomes a death after a Lifeguard timeout that shrinks
with independent confirmations, unless the suspect refutes it by gossiping a
higher incarnation. Updates piggy-back on every packet and are also gossiped
every ``gossip_interval``; a periodic push-pull exchanges full tables.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from zsd.cluster.swim.awareness import Awareness
from zsd.cluster.swim.broadcast import BroadcastQueue
from zsd.cluster.swim.codec import (
    CodecError,
    decode_packet,
    decode_stream,
    encode_message,
    encode_meta,
    encode_packet,
    encode_stream,
)
from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, Member, MemberState
from zsd.cluster.swim.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
)
from zsd.cluster.swim.state import Membership, SwimStats
from zsd.cluster.swim.table import MemberTable, Record
from zsd.cluster.swim.transport import Output, SendPacket, SendStream

log = logging.getLogger(__name__)

_HEADER_SIZE = 5
_PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_interval(interval: float, n: int) -> float:
    """Past 32 members, exchange full tables less often: each costs O(n) bytes."""
    if n <= _PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)


class _Probe:
    __slots__ = ("acked", "expected_nacks", "incarnation", "nacks", "seq", "target")

    def __init__(self, seq: int, target: str, incarnation: int) -> None:
        self.seq = seq
        self.target = target
        self.incarnation = incarnation
        self.acked = False
        self.nacks = 0
        self.expected_nacks = 0


@dataclass(slots=True)
class _Relay:
    """We are a helper: our ping ``seq`` stands for the requester's ``orig_seq``."""

    orig_seq: int
    reply_to: Address
    nack: bool


@dataclass(slots=True)
class _Reconnect:
    """A ping to a dead member or seed; an ack means it is reachable: push-pull with it."""

    address: Address


class SwimNode:
    """One member's protocol state. Not thread-safe; call from one task/loop."""

    def __init__(
        self,
        *,
        config: SwimConfig,
        name: str,
        address: Address,
        meta: HostMeta,
        rng: random.Random,
        now: float,
        known: Sequence[Member] = (),
    ) -> None:
        """``known`` pre-loads members (e.g. from the cluster database at start) as
        they were last seen; the protocol corrects them like any other stale view."""
        self.config = config
        self.name = name
        self.address = address
        self.stats = SwimStats()
        self._rng = rng
        meta_raw = encode_meta(meta)
        self._table = MemberTable(
            local=Record(
                name=name,
                address=address,
                incarnation=0,
                state=MemberState.ALIVE,
                state_since=now,
                meta=meta,
                meta_raw=meta_raw,
            ),
            rng=rng,
        )
        self._broadcasts = BroadcastQueue(retransmit_mult=config.retransmit_mult)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._acks: dict[int, _Probe | _Relay | _Reconnect] = {}
        self._probe: _Probe | None = None
        self._seq = rng.getrandbits(32)
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._timer_ids = itertools.count()
        self._out: list[Output] = []
        self._seeds: tuple[Address, ...] = ()
        self._membership = Membership(
            config=config,
            table=self._table,
            broadcasts=self._broadcasts,
            awareness=self._awareness,
            stats=self.stats,
            schedule=self._at,
            emit=self._out.append,
        )

        for member in known:
            if member.name != name and self._table.get(member.name) is None:
                self._table.add(
                    Record(
                        name=member.name,
                        address=member.address,
                        incarnation=member.incarnation,
                        state=member.state,
                        state_since=now,
                        meta=member.meta,
                        meta_raw=encode_meta(member.meta),
                    ),
                    probe_soon=False,
                )
        self._membership.queue_self_alive()
        # Random phases so a cluster started at once does not probe in lockstep.
        interval = config.probe_interval
        self._at(now + rng.uniform(0, interval), self._probe_tick)
        self._at(now + rng.uniform(0, config.gossip_interval), self._gossip_tick)
        pp = push_pull_interval(config.push_pull_interval, len(self._table))
        self._at(now + rng.uniform(0, pp), self._push_pull_tick)
        self._at(now + config.reconnect_interval, self._reconnect_tick)

    # -- public API -------------------------------------------------------------------

    def join(self, seeds: Sequence[Address], now: float) -> list[Output]:
        """Exchange full state with every seed now; while no other member is known
        alive, the seeds are retried every ``reconnect_interval``."""
        self._seeds = tuple(s for s in seeds if s != self.address)
        for seed in self._seeds:
            self._push_pull(seed, join=True)
        return self._flush()

    def leave(self, now: float) -> list[Output]:
        """Announce a graceful departure. Keep the node running (ticks and received
        messages) until :attr:`leave_propagated` or a timeout, then stop it."""
        if not self._membership.leaving:
            self._membership.leaving = True
            me = self._table.local
            self._membership.dead(Dead(incarnation=me.incarnation, name=self.name, source=self.name), now)
            # Push it out right away too: the caller may stop us before the next gossip tick.
            self._gossip(now)
        return self._flush()

    @property
    def leave_propagated(self) -> bool:
        """True once our leave message has been sent its full number of times."""
        return self._membership.leaving and self._broadcasts.transmits(self.name) is None

    def update_meta(self, meta: HostMeta, now: float) -> list[Output]:
        """Publish new metadata (e.g. a new believed leader) with a new incarnation."""
        me = self._table.local
        me.meta_raw = encode_meta(meta)
        me.meta = meta
        me.incarnation += 1
        self._membership.queue_self_alive()
        return self._flush()

    def handle_packet(self, src: Address, data: bytes, now: float) -> list[Output]:
        """A datagram arrived. Garbage is counted and dropped, never raised."""
        try:
            messages = decode_packet(data)
        except CodecError as e:
            self.stats.bad_messages += 1
            log.debug("dropping packet from %s: %s", src, e)
            return []
        for msg in messages:
            self._on_message(msg, now, stream=False)
        return self._flush()

    def handle_stream(self, src: Address, data: bytes, now: float) -> list[Output]:
        """A stream frame arrived (``src`` is the connection's peer, often an ephemeral port)."""
        try:
            msg = decode_stream(data)
        except CodecError as e:
            self.stats.bad_messages += 1
            log.debug("dropping stream frame from %s: %s", src, e)
            return []
        self._on_message(msg, now, stream=True)
        return self._flush()

    def tick(self, now: float) -> list[Output]:
        """Run every timer due at ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fire = heapq.heappop(timers)
            fire(now)
        return self._flush()

    def next_deadline(self) -> float:
        """When :meth:`tick` must be called next (there is always a periodic timer)."""
        return self._timers[0][0]

    def members(self) -> list[Member]:
        """Every member in the table, the local one included."""
        return self._table.snapshot()

    def member(self, name: str) -> Member | None:
        record = self._table.get(name)
        return None if record is None else record.snapshot()

    @property
    def incarnation(self) -> int:
        return self._table.local.incarnation

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; probe interval is scaled by score + 1."""
        return self._awareness.score

    @property
    def live_count(self) -> int:
        return self._table.live_count

    @property
    def pending_broadcasts(self) -> int:
        return len(self._broadcasts)

    # -- plumbing ---------------------------------------------------------------------

    def _flush(self) -> list[Output]:
        out = self._out.copy()
        self._out.clear()  # cleared in place: Membership holds its append
        return out

    def _at(self, when: float, fire: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_ids), fire))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _send(self, to: Address, first: list[bytes]) -> None:
        """A packet with ``first`` plus as many pending updates as fit."""
        room = self.config.packet_size - _HEADER_SIZE - sum(map(len, first))
        gossip = self._broadcasts.get(limit=room, num_members=len(self._table), max_count=255 - len(first))
        self._out.append(SendPacket(to=to, payload=encode_packet(first + gossip)))

    def _send_stream(self, to: Address, msg: Message) -> None:
        self._out.append(SendStream(to=to, payload=encode_stream(msg)))

    def _on_message(self, msg: Message, now: float, *, stream: bool) -> None:
        if isinstance(msg, Ack):
            self._on_ack(msg, now)
        elif isinstance(msg, Ping):
            self._on_ping(msg, stream=stream)
        elif isinstance(msg, Alive):
            self._membership.alive(msg, now)
        elif isinstance(msg, Suspect):
            self._membership.suspect(msg, now)
        elif isinstance(msg, Dead):
            self._membership.dead(msg, now)
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(msg, now)
        elif isinstance(msg, Nack):
            handler = self._acks.get(msg.seq)
            if isinstance(handler, _Probe):
                handler.nacks += 1
        else:
            self._on_push_pull(msg, now)

    # -- failure detection ------------------------------------------------------------

    def _probe_tick(self, now: float) -> None:
        self._finish_probe(now)
        interval = self._awareness.scale(self.config.probe_interval)
        self._at(now + interval, self._probe_tick)
        if self._membership.leaving:
            return
        target = self._table.next_probe_target()
        if target is None:
            return
        self.stats.probes += 1
        probe = _Probe(self._next_seq(), target.name, target.incarnation)
        self._probe = self._acks[probe.seq] = probe
        first = [encode_message(self._ping(probe.seq, target.name))]
        if target.state == MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly so it can refute
            # now instead of waiting for the gossip to reach it.
            suspect = Suspect(incarnation=target.incarnation, name=target.name, source=self.name)
            first.append(encode_message(suspect))
        self._send(target.address, first)
        self._at(now + self.config.probe_timeout, partial(self._probe_timed_out, probe))

    def _ping(self, seq: int, target: str) -> Ping:
        return Ping(seq=seq, target=target, source=self.name, source_addr=self.address)

    def _probe_timed_out(self, probe: _Probe, now: float) -> None:
        if self._probe is not probe or probe.acked:
            return
        target = self._table.get(probe.target)
        if target is None:
            return
        helpers = self._table.pick(
            self.config.indirect_checks, lambda r: r.state == MemberState.ALIVE, exclude=target.name
        )
        request = encode_message(
            IndirectPing(
                seq=probe.seq,
                target=target.name,
                target_addr=target.address,
                source=self.name,
                source_addr=self.address,
                nack=True,
            )
        )
        for helper in helpers:
            self._send(helper.address, [request])
        probe.expected_nacks = len(helpers)
        if self.config.stream_fallback_ping:
            self._send_stream(target.address, self._ping(probe.seq, target.name))

    def _finish_probe(self, now: float) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        self._acks.pop(probe.seq, None)
        if probe.acked:
            return
        self.stats.failed_probes += 1
        # Lifeguard: helpers that did not even nack suggest *our* link is the
        # problem; with no helpers to ask, any failure counts against us.
        if probe.expected_nacks:
            self._awareness.apply_delta(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._awareness.apply_delta(1)
        self._membership.suspect(
            Suspect(incarnation=probe.incarnation, name=probe.target, source=self.name), now
        )

    def _on_ping(self, ping: Ping, *, stream: bool) -> None:
        if ping.target not in (self.name, ""):
            return  # meant for a previous owner of this address ("" = whoever listens: a seed)
        ack = Ack(seq=ping.seq)
        if stream:
            self._send_stream(ping.source_addr, ack)
        else:
            self._send(ping.source_addr, [encode_message(ack)])

    def _on_indirect_ping(self, req: IndirectPing, now: float) -> None:
        seq = self._next_seq()
        self._acks[seq] = _Relay(orig_seq=req.seq, reply_to=req.source_addr, nack=req.nack)
        self._send(req.target_addr, [encode_message(self._ping(seq, req.target))])
        self._at(now + self.config.probe_timeout, partial(self._relay_timed_out, seq))

    def _relay_timed_out(self, seq: int, now: float) -> None:
        relay = self._acks.pop(seq, None)
        if isinstance(relay, _Relay) and relay.nack:
            self._send(relay.reply_to, [encode_message(Nack(seq=relay.orig_seq))])

    def _on_ack(self, ack: Ack, now: float) -> None:
        handler = self._acks.get(ack.seq)
        if isinstance(handler, _Probe):
            if not handler.acked:
                handler.acked = True
                self._awareness.apply_delta(-1)
        elif isinstance(handler, _Relay):
            del self._acks[ack.seq]
            self._send(handler.reply_to, [encode_message(Ack(seq=handler.orig_seq))])
        elif isinstance(handler, _Reconnect):
            del self._acks[ack.seq]
            self._push_pull(handler.address, join=True)

    # -- dissemination and anti-entropy -----------------------------------------------

    def _gossip_tick(self, now: float) -> None:
        self._at(now + self.config.gossip_interval, self._gossip_tick)
        self._gossip(now)

    def _gossip(self, now: float) -> None:
        if not self._broadcasts:
            return
        dead_until = now - self.config.gossip_to_the_dead_time

        def reachable(r: Record) -> bool:
            # Keep telling the recently dead: if they are not, they learn it and refute.
            return not r.state.is_gone or (r.state == MemberState.DEAD and r.state_since > dead_until)

        limit = self.config.packet_size - _HEADER_SIZE
        for target in self._table.pick(self.config.gossip_nodes, reachable):
            messages = self._broadcasts.get(limit=limit, num_members=len(self._table))
            if not messages:
                break
            self._out.append(SendPacket(to=target.address, payload=encode_packet(messages)))

    def _records(self) -> tuple[MemberRecord, ...]:
        return tuple(
            MemberRecord(
                name=r.name, address=r.address, incarnation=r.incarnation, state=r.state, meta=r.meta_raw
            )
            for r in self._table
        )

    def _push_pull(self, to: Address, *, join: bool, reply: bool = False) -> None:
        msg = PushPull(
            join=join, reply=reply, source=self.name, source_addr=self.address, members=self._records()
        )
        self._send_stream(to, msg)

    def _push_pull_tick(self, now: float) -> None:
        interval = push_pull_interval(self.config.push_pull_interval, len(self._table))
        self._at(now + interval, self._push_pull_tick)
        if self._membership.leaving:
            return
        peers = self._table.pick(1, lambda r: r.state == MemberState.ALIVE)
        if peers:
            self._push_pull(peers[0].address, join=False)

    def _on_push_pull(self, msg: PushPull, now: float) -> None:
        if not msg.reply:
            self._push_pull(msg.source_addr, join=False, reply=True)
        self._membership.merge(msg.members, msg.source, now)

    def _reconnect_tick(self, now: float) -> None:
        """Forget long-gone members, and try to reach a seed (when alone) or one dead
        member: two sides of a healed partition that each declared the other dead
        never probe each other again, so something must knock."""
        cfg = self.config
        self._at(now + cfg.reconnect_interval, self._reconnect_tick)
        dead = self._membership.forget_expired(now)
        if self._membership.leaving:
            return
        if self._table.live_count <= 1 and self._seeds:
            target, target_name = self._rng.choice(self._seeds), ""  # a seed's name is unknown
        elif dead:
            record = self._rng.choice(dead)
            target, target_name = record.address, record.name
        else:
            return
        seq = self._next_seq()
        self._acks[seq] = _Reconnect(target)
        # A cheap ping first: the full table only goes out once the peer answers.
        self._send(target, [encode_message(self._ping(seq, target_name))])
        self._at(now + cfg.probe_interval, partial(self._forget_ack, seq))

    def _forget_ack(self, seq: int, now: float) -> None:
        self._acks.pop(seq, None)
