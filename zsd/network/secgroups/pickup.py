"""Pickup windows: for a while after a NIC arrives on a host, its chains let
conntrack pick up TCP connections from mid-stream.

The NIC chains drop new TCP that does not start with a SYN (:mod:`compiler`
explains why: revocation). A NIC that arrives on a host with established
connections has no conntrack entries here: a VM live-migrated to this host (the
destination never saw its connections), a NIC zsd first sees after a start or an
upgrade, the port group of a NIC getting its zone. For ``PICKUP_SECONDS`` after
its port appears in the ruleset the NIC's marks are in the ``pickup`` set and the
drop skips them, so the next packet of each such connection is judged by the
rules as a new connection in its own direction and, if they admit it, tracked
from then on.

120 s: a live migration's switch-over takes seconds, and every TCP connection
that is not idle sends within a retransmission timeout or two (peers back off
to ~60 s after a few losses); a connection idle for longer than the window dies
on its next packet. While a window is open a revoked connection of that NIC can
be revived by its still-allowed side, as before the SYN rule existed.

The kernel ends a window by itself: the set has ``flags timeout`` and each
element its own timeout, so an expiry needs no apply. A full reload of zsd's
tables recreates the set empty; :class:`PickupWindows` keeps the end of every
open window (on an injected monotonic clock) and the applier adds the elements
again with what is left of them. Adding an element that exists sets its timeout
anew (kernel 6.x with nft timeout updates; verified on 6.18), so a mark reused by
a newly arrived port gets its full window even if the departed port's element
has not expired yet; elements of departed ports are never deleted (deleting an
element that has just expired fails the whole transaction).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

from zsd.network.secgroups.nftobjects import Command

PICKUP_SECONDS = 120.0
PICKUP_SET = "pickup"


class PickupWindows:
    """Port -> the clock time its pickup window ends. A port opens a window when it
    is absent from the previous :meth:`update` (on the first update every port is
    new: zsd just started and cannot know which connections the kernel tracks)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, seconds: float = PICKUP_SECONDS
    ) -> None:
        self._clock = clock
        self._seconds = seconds
        self._present: frozenset[str] = frozenset()
        self._ends: dict[str, float] = {}

    def update(self, ports: Iterable[str]) -> dict[str, float]:
        """The open windows of the ports now present (closed ones are left out)."""
        now = self._clock()
        present = frozenset(ports)
        ends = {p: end for p, end in self._ends.items() if p in present and end > now}
        for port in present - self._present:
            ends[port] = now + self._seconds
        self._present = present
        self._ends = ends
        return dict(ends)


def element_commands(
    table: Mapping[str, str],
    *,
    applied: Mapping[int, float],
    wanted: Mapping[int, float],
    now: float,
    full: bool,
) -> list[Command]:
    """``add element`` commands that put the ``wanted`` marks (mark -> window end)
    in the pickup set of ``table`` ({"family", "table"}) with what is left of their
    windows: all of them after a full reload (the set was recreated empty), else
    those whose window is not already in the kernel as ``applied``."""
    elements = []
    for mark, end in sorted(wanted.items()):
        left = end - now
        if left <= 0 or (not full and applied.get(mark) == end):
            continue
        # libnftables' JSON takes whole seconds; round up so a window is never cut short
        elements.append({"elem": {"val": mark, "timeout": max(1, math.ceil(left))}})
    if not elements:
        return []
    return [{"add": {"element": {**table, "name": PICKUP_SET, "elem": elements}}}]
