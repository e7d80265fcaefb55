"""The queue of membership updates waiting to be piggy-backed on outgoing packets.

Each update is sent ``retransmit_mult * ceil(log10(n + 1))`` times, enough for an
epidemic to reach every member with high probability, then dropped. Updates sent
the fewest times go first (newest first among equals), so fresh news spreads
before old news is repeated. A newer update about a member replaces the older
one still queued: only the latest state of each member is worth sending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def retransmit_limit(retransmit_mult: int, num_members: int) -> int:
    return retransmit_mult * math.ceil(math.log10(num_members + 1))


@dataclass(slots=True, eq=False)
class _Item:
    key: str
    payload: bytes
    id: int
    transmits: int = field(default=0)


class BroadcastQueue:
    """Pending updates, bucketed by transmit count so picking the least-sent ones
    costs O(picked) rather than a sort per packet (this runs for every packet)."""

    def __init__(self, *, retransmit_mult: int, max_items: int = 4096) -> None:
        self._mult = retransmit_mult
        self._max_items = max_items
        self._by_key: dict[str, _Item] = {}
        # transmits -> {id: item}; ids grow, so sorting a bucket's keys puts newest first.
        self._buckets: dict[int, dict[int, _Item]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def queue(self, key: str, payload: bytes) -> None:
        """Queue ``payload`` (an encoded message about member ``key``), replacing
        whatever was still queued about that member."""
        old = self._by_key.pop(key, None)
        if old is not None:
            self._remove(old)
        self._next_id += 1
        item = _Item(key=key, payload=payload, id=self._next_id)
        self._by_key[key] = item
        self._buckets.setdefault(0, {})[item.id] = item
        if len(self._by_key) > self._max_items:
            self._drop_most_sent()

    def get(self, *, limit: int, num_members: int, max_count: int = 255) -> list[bytes]:
        """Take updates totalling at most ``limit`` bytes, counting one transmission each."""
        if not self._by_key or limit <= 0:
            return []
        picked: list[_Item] = []
        remaining = limit
        for transmits in sorted(self._buckets):
            bucket = self._buckets[transmits]
            for item_id in sorted(bucket, reverse=True):
                item = bucket[item_id]
                size = len(item.payload)
                if size <= remaining:
                    picked.append(item)
                    remaining -= size
                    if len(picked) >= max_count:
                        break
            if len(picked) >= max_count or remaining < 16:  # no message is that small
                break
        # Move picked items only now: moving them while iterating would let an item
        # promoted into the next bucket be picked a second time.
        max_transmits = retransmit_limit(self._mult, num_members)
        for item in picked:
            self._remove(item)
            item.transmits += 1
            if item.transmits >= max_transmits:
                del self._by_key[item.key]
            else:
                self._buckets.setdefault(item.transmits, {})[item.id] = item
        return [item.payload for item in picked]

    def transmits(self, key: str) -> int | None:
        """How often the update about ``key`` was sent, None if none is queued."""
        item = self._by_key.get(key)
        return None if item is None else item.transmits

    def _remove(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.id]
        if not bucket:
            del self._buckets[item.transmits]

    def _drop_most_sent(self) -> None:
        most = max(self._buckets)
        oldest = next(iter(self._buckets[most].values()))
        self._remove(oldest)
        del self._by_key[oldest.key]
