"""The rules for changing a member's state: what an alive, suspect or dead message
(from a packet, or from a push-pull table) does to the member table.

SWIM's ordering: a higher incarnation always wins; at equal incarnation
dead/left > suspect > alive. Only the member itself raises its incarnation,
which is how it refutes a suspicion (or its own reported death). Every accepted
change is re-gossiped through the broadcast queue and reported as an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial

from zsd.cluster.swim.awareness import Awareness
from zsd.cluster.swim.broadcast import BroadcastQueue
from zsd.cluster.swim.codec import CodecError, decode_meta, encode_message
from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import MemberState
from zsd.cluster.swim.messages import Alive, Dead, MemberRecord, Message, Suspect
from zsd.cluster.swim.suspicion import Suspicion, suspicion_timeout
from zsd.cluster.swim.table import MemberTable, Record
from zsd.cluster.swim.transport import EventKind, MemberEvent, Output

log = logging.getLogger(__name__)

Schedule = Callable[[float, Callable[[float], None]], None]


class SwimStats:
    """Counters for tests, benchmarks and metrics; never read by the protocol."""

    __slots__ = ("bad_messages", "failed_probes", "probes", "refutations")

    def __init__(self) -> None:
        self.bad_messages = 0
        self.probes = 0
        self.failed_probes = 0
        self.refutations = 0


class Membership:
    """Applies membership messages to the table; owns the suspicion timers."""

    def __init__(
        self,
        *,
        config: SwimConfig,
        table: MemberTable,
        broadcasts: BroadcastQueue,
        awareness: Awareness,
        stats: SwimStats,
        schedule: Schedule,
        emit: Callable[[Output], None],
    ) -> None:
        self._config = config
        self._table = table
        self._broadcasts = broadcasts
        self._awareness = awareness
        self._stats = stats
        self._schedule = schedule
        self._emit = emit
        self._suspicions: dict[str, Suspicion] = {}
        self.leaving = False  # once set, accusations of ourselves are no longer refuted

    def queue(self, name: str, msg: Message) -> None:
        self._broadcasts.queue(name, encode_message(msg))

    def queue_self_alive(self) -> None:
        me = self._table.local
        self.queue(
            me.name, Alive(incarnation=me.incarnation, name=me.name, address=me.address, meta=me.meta_raw)
        )

    def _event(self, kind: EventKind, record: Record) -> None:
        self._emit(MemberEvent(kind=kind, member=record.snapshot()))

    def refute(self, accused: int) -> None:
        """Someone thinks we are suspect or dead: outbid that incarnation."""
        me = self._table.local
        me.incarnation = max(me.incarnation, accused) + 1
        self._stats.refutations += 1
        # Being accused is a hint that our own link is bad (Lifeguard).
        self._awareness.apply_delta(1)
        self.queue_self_alive()

    def alive(self, alive: Alive, now: float) -> None:
        table = self._table
        me = table.local
        if alive.name == me.name:
            if not self.leaving and (
                alive.incarnation > me.incarnation
                or (
                    alive.incarnation == me.incarnation
                    and (alive.meta != me.meta_raw or alive.address != me.address)
                )
            ):
                self.refute(alive.incarnation)  # a stale self from before a restart
            return
        record = table.get(alive.name)
        if record is None:
            try:
                meta = decode_meta(alive.meta)
            except CodecError:
                self._stats.bad_messages += 1
                return
            record = Record(
                name=alive.name,
                address=alive.address,
                incarnation=alive.incarnation,
                state=MemberState.ALIVE,
                state_since=now,
                meta=meta,
                meta_raw=alive.meta,
            )
            table.add(record)
            self.queue(alive.name, alive)
            self._event(EventKind.JOINED, record)
            return
        if alive.incarnation <= record.incarnation:
            return
        if alive.address != record.address and not record.state.is_gone:
            # Two live processes claim one name: keep the one we know, loudly.
            log.warning("%s claims member %s, known at %s", alive.address, alive.name, record.address)
            return
        changed = alive.meta != record.meta_raw or alive.address != record.address
        if alive.meta != record.meta_raw:
            try:
                record.meta = decode_meta(alive.meta)
            except CodecError:
                self._stats.bad_messages += 1
                return
            record.meta_raw = alive.meta
        previous = record.state
        self._suspicions.pop(alive.name, None)
        record.incarnation = alive.incarnation
        record.address = alive.address
        table.set_state(record, MemberState.ALIVE, now)
        self.queue(alive.name, alive)
        if previous.is_gone:
            self._event(EventKind.JOINED, record)
        elif changed or previous != MemberState.ALIVE:
            self._event(EventKind.UPDATED, record)

    def suspect(self, suspect: Suspect, now: float) -> None:
        record = self._table.get(suspect.name)
        if record is None or suspect.incarnation < record.incarnation:
            return
        suspicion = self._suspicions.get(suspect.name)
        if suspicion is not None:
            # Independent confirmations shorten the timer; re-gossip them so the
            # other suspecters' timers shrink too.
            if suspicion.confirm(suspect.source):
                self.queue(suspect.name, suspect)
                self._schedule(suspicion.deadline, partial(self._suspicion_expired, suspect.name, suspicion))
            return
        if record.state != MemberState.ALIVE:
            return
        if record is self._table.local:
            if not self.leaving:
                self.refute(suspect.incarnation)
            return
        cfg = self._config
        n = self._table.live_count
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0  # too few members to ever collect k confirmations
        min_timeout = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        suspicion = Suspicion(
            suspecter=suspect.source,
            incarnation=suspect.incarnation,
            k=k,
            min_timeout=min_timeout,
            max_timeout=cfg.suspicion_max_timeout_mult * min_timeout,
            now=now,
        )
        self._suspicions[suspect.name] = suspicion
        self._schedule(suspicion.deadline, partial(self._suspicion_expired, suspect.name, suspicion))
        record.incarnation = suspect.incarnation
        self._table.set_state(record, MemberState.SUSPECT, now)
        self.queue(suspect.name, suspect)
        self._event(EventKind.SUSPECTED, record)

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        if self._suspicions.get(name) is not suspicion or now < suspicion.deadline:
            return  # refuted, or an entry for a deadline that confirmations moved earlier
        self.dead(Dead(incarnation=suspicion.incarnation, name=name, source=self._table.local.name), now)

    def dead(self, dead: Dead, now: float) -> None:
        record = self._table.get(dead.name)
        if record is None or dead.incarnation < record.incarnation or record.state.is_gone:
            return
        is_local = record is self._table.local
        if is_local and not self.leaving:
            self.refute(dead.incarnation)
            return
        self._suspicions.pop(dead.name, None)
        record.incarnation = dead.incarnation
        left = dead.source == dead.name
        self._table.set_state(record, MemberState.LEFT if left else MemberState.DEAD, now)
        self.queue(dead.name, dead)
        if not is_local:
            self._event(EventKind.LEFT if left else EventKind.FAILED, record)

    def merge(self, records: Iterable[MemberRecord], source: str, now: float) -> None:
        """Fold in another member's full table (push-pull)."""
        for r in records:
            if r.state == MemberState.ALIVE:
                self.alive(Alive(incarnation=r.incarnation, name=r.name, address=r.address, meta=r.meta), now)
            elif r.state == MemberState.LEFT:
                self.dead(Dead(incarnation=r.incarnation, name=r.name, source=r.name), now)
            else:
                # Someone else's "dead" is only a suspicion here: we give the member
                # the chance to refute rather than trusting a possibly stale table.
                self.suspect(Suspect(incarnation=r.incarnation, name=r.name, source=source), now)

    def forget_expired(self, now: float) -> list[Record]:
        """Drop long-dead and long-left members; return the dead ones still kept."""
        cfg = self._config
        kept_dead: list[Record] = []
        for record in list(self._table):
            if record is self._table.local:
                continue
            if record.state == MemberState.DEAD:
                if now - record.state_since > cfg.dead_retention:
                    self._event(EventKind.FORGOTTEN, self._table.remove(record.name))
                else:
                    kept_dead.append(record)
            elif record.state == MemberState.LEFT and now - record.state_since > cfg.gossip_to_the_dead_time:
                self._event(EventKind.FORGOTTEN, self._table.remove(record.name))
        return kept_dead
