"""The member table: records, counts, random choice and the probe order.

Only bookkeeping lives here; the rules for *which* transitions are allowed are
in :mod:`.node`. Everything that runs per packet is O(1) or O(k) so that 1000
simulated members stay affordable: random picks are rejection-sampled from a
flat list instead of filtering the whole table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from zsd.cluster.swim.member import Address, HostMeta, Member, MemberState


class Record:
    """The mutable inside view of one member; :meth:`snapshot` is what leaves the core."""

    __slots__ = ("address", "incarnation", "meta", "meta_raw", "name", "state", "state_since")

    def __init__(
        self,
        *,
        name: str,
        address: Address,
        incarnation: int,
        state: MemberState,
        state_since: float,
        meta: HostMeta,
        meta_raw: bytes,
    ) -> None:
        self.name = name
        self.address = address
        self.incarnation = incarnation
        self.state = state
        self.state_since = state_since
        self.meta = meta
        self.meta_raw = meta_raw

    def snapshot(self) -> Member:
        return Member(
            name=self.name,
            address=self.address,
            incarnation=self.incarnation,
            state=self.state,
            state_since=self.state_since,
            meta=self.meta,
        )


class MemberTable:
    def __init__(self, *, local: Record, rng: random.Random) -> None:
        self.local = local
        self._rng = rng
        self._records: dict[str, Record] = {local.name: local}
        # Everyone but the local member, for O(1) random picks (swap-remove keeps it dense).
        self._others: list[str] = []
        self._other_index: dict[str, int] = {}
        self._live = 1  # alive or suspect, the local member included
        self._probe_order: list[str] = []
        self._probe_index = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())

    def get(self, name: str) -> Record | None:
        return self._records.get(name)

    @property
    def live_count(self) -> int:
        """Members believed alive or suspect, the local one included."""
        return self._live

    def add(self, record: Record, *, probe_soon: bool = True) -> None:
        """Add a member; ``probe_soon=False`` leaves it for the next probe round
        (bulk loading, where inserting each one at a random place costs O(n^2))."""
        self._records[record.name] = record
        self._other_index[record.name] = len(self._others)
        self._others.append(record.name)
        if record.state < MemberState.DEAD:
            self._live += 1
            if probe_soon:
                self.schedule_probe(record.name)

    def remove(self, name: str) -> Record:
        record = self._records.pop(name)
        index = self._other_index.pop(name)
        last = self._others.pop()
        if last != name:
            self._others[index] = last
            self._other_index[last] = index
        if record.state < MemberState.DEAD:
            self._live -= 1
        return record

    def set_state(self, record: Record, state: MemberState, now: float) -> None:
        if state == record.state:
            return
        was_gone, gone = record.state.is_gone, state.is_gone
        record.state = state
        record.state_since = now
        if was_gone and not gone:
            self._live += 1
            self.schedule_probe(record.name)
        elif gone and not was_gone:
            self._live -= 1

    def pick(self, k: int, accept: Callable[[Record], bool], *, exclude: str | None = None) -> list[Record]:
        """Up to ``k`` distinct random members (never the local one) passing ``accept``."""
        others = self._others
        n = len(others)
        if k <= 0 or n == 0:
            return []
        records = self._records
        if n <= 4 * k:
            pool = [r for name in others if name != exclude and accept(r := records[name])]
            return self._rng.sample(pool, min(k, len(pool)))
        # Large table: nearly everyone qualifies in practice, so sampling with
        # rejection costs O(k); a mostly-dead table just yields fewer picks.
        chosen: dict[str, Record] = {}
        randrange = self._rng.randrange
        for _ in range(8 * k):
            name = others[randrange(n)]
            if name != exclude and name not in chosen and accept(r := records[name]):
                chosen[name] = r
                if len(chosen) == k:
                    break
        return list(chosen.values())

    def schedule_probe(self, name: str) -> None:
        """Put a (re)appearing member somewhere in the rest of this probe round,
        so it is checked soon but not always right away."""
        position = self._rng.randint(self._probe_index, len(self._probe_order))
        self._probe_order.insert(position, name)

    def next_probe_target(self) -> Record | None:
        """Round-robin over a shuffled order (SWIM's bounded detection time:
        every member is probed once per round), reshuffled at each round's end."""
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                record = self._records.get(self._probe_order[self._probe_index])
                self._probe_index += 1
                if record is not None and record.state < MemberState.DEAD:
                    return record
            records = self._records
            self._probe_order = [name for name in self._others if records[name].state < MemberState.DEAD]
            self._rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def snapshot(self) -> list[Member]:
        return [record.snapshot() for record in self._records.values()]
